"""MSR-VTT text-video retrieval, the 1k-A test split (1000 videos, one sentence each) and the 9k train split.

On-disk format of the common release (the JSFusion 1k-A split as distributed with CLIP4Clip,
and used by ImageBind's and LanguageBind's retrieval numbers)::

    root/MSRVTT_JSFUSION_test.csv      key,vid_key,video_id,sentence   (also under root/msrvtt_data/)
    root/MSRVTT_train.9k.csv           video_id   (split "train": the 9k training videos, captions from
    root/MSRVTT_data.json              {"sentences": [{"video_id", "caption"}, ...]}, ~20 per video)
    root/videos/all/video7020.mp4      (or root/MSRVTT_Videos/, or video_root=)
    root/frames/video7020/00001.jpg    optional pre-extracted frames, one folder per video

Decoding mp4 needs PyAV (``pip install "robustmm[bind]"``; torchvision 0.29 no longer decodes
video and torchcodec pins torch); without it, frames folders are used, e.g. extracted with
``ffmpeg -i video7020.mp4 frames/video7020/%05d.jpg``. A video with a frames folder never needs
PyAV. Each item is ``num_frames`` frames sampled at ``linspace(0, T - 1)`` (LanguageBind's
decord recipe), resized (shorter side, bicubic) and center-cropped to ``image_size``:
(num_frames, 3, S, S) in [0, 1]. Captions: the item's sentence. Retrieval only: no zero-shot task.
"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, EmptyDatasetError, RobustMMError, UnknownNameError
from .base import MultimodalDataset
from .files import MissingDataError, choose_subset
from .media import load_rgb, resize_crop
from .registry import register_dataset

logger = logging.getLogger(__name__)

__all__ = ["VideoLoader", "load_msrvtt", "decode_mp4", "MSRVTT_SPLIT_SIZES"]

#: Side of the square frames/maps when ``image_size`` is not given (what the Bind towers take).
DEFAULT_IMAGE_SIZE = 224

_CSV = "MSRVTT_JSFUSION_test.csv"
_FRAME_EXT = (".jpg", ".jpeg", ".png")


def decode_mp4(path: Path, num_frames: int) -> list[np.ndarray]:
    """``num_frames`` RGB frames (H, W, 3 uint8) at linspace(0, T - 1) of a video file, with PyAV."""
    try:
        import av
    except ImportError:
        raise MissingDataError(
            f"msrvtt: decoding {path.name} needs PyAV (pip install 'robustmm[bind]'), "
            f"or extract its frames into frames/{path.stem}/"
        ) from None
    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except FileNotFoundError:
        raise MissingDataError(f"video file not found: {path}") from None
    except Exception as e:  # noqa: BLE001 - PyAV raises its own error classes
        raise CheckpointError(f"cannot decode video {path}: {e}") from None
    if not frames:
        raise CheckpointError(f"video {path} has no frames")
    return [frames[i] for i in np.linspace(0, len(frames) - 1, num_frames, dtype=int)]


class VideoLoader:
    """Lazy video loader: index -> (len, num_frames, 3, size, size) float32 in [0, 1]."""

    def __init__(self, sources: list[str], num_frames: int, size: int):
        self.sources, self.num_frames, self.size = list(sources), int(num_frames), int(size)

    def load_one(self, source: str) -> torch.Tensor:
        p = Path(source)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in _FRAME_EXT)
            if not files:
                raise MissingDataError(f"msrvtt: no frame images in {p}")
            pick = np.linspace(0, len(files) - 1, self.num_frames, dtype=int)
            return torch.stack([load_rgb(files[i], self.size) for i in pick])
        frames = decode_mp4(p, self.num_frames)
        return torch.stack([resize_crop(torch.from_numpy(f.astype(np.float32) / 255.0).permute(2, 0, 1), self.size)
                            for f in frames])

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(index, dtype=torch.long).reshape(-1).tolist()
        if not idx:
            return torch.zeros(0, self.num_frames, 3, self.size, self.size)
        return torch.stack([self.load_one(self.sources[i]) for i in idx])


def _find(root: Path, name: str, what: str) -> Path:
    for p in (root / name, root / "msrvtt_data" / name):
        if p.is_file():
            return p
    raise MissingDataError(f"msrvtt: {name} not found under {root} ({what})")


def _train_rows(root: Path) -> list[tuple[str, list[str]]]:
    """The 9k training videos with all their captions."""
    ids_csv = _find(root, "MSRVTT_train.9k.csv", "the 9k training split: a video_id column")
    data = _find(root, "MSRVTT_data.json", "the captions: sentences with video_id and caption")
    try:
        with open(ids_csv, newline="", encoding="utf-8") as f:
            ids = [r["video_id"].strip() for r in csv.DictReader(f)]
        caps: dict[str, list[str]] = {}
        for s in json.loads(data.read_text(encoding="utf-8"))["sentences"]:
            caps.setdefault(str(s["video_id"]), []).append(str(s["caption"]).strip())
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError, csv.Error) as e:
        raise CheckpointError(f"msrvtt: malformed training split files ({type(e).__name__}: {e})") from None
    return [(vid, caps.get(vid, [])) for vid in ids]


def _source(root: Path, video_root: Path | None, vid: str) -> Path:
    frames = root / "frames" / vid
    if frames.is_dir():
        return frames
    for d in ([video_root] if video_root else []) + [root / "videos" / "all", root / "MSRVTT_Videos", root / "videos"]:
        if (d / f"{vid}.mp4").is_file():
            return d / f"{vid}.mp4"
    return (video_root or root / "videos" / "all") / f"{vid}.mp4"


#: videos per split: the 1k-A test CSV and the 9k training list are fixed files
MSRVTT_SPLIT_SIZES: dict[str, int | None] = {"test": 1000, "train": 9000}


@register_dataset("msrvtt",
                  "MSR-VTT 1k-A text-video retrieval (MSRVTT_JSFUSION_test.csv + videos/all/*.mp4 or frames/ under root=)",
                  needs_root=True, splits=MSRVTT_SPLIT_SIZES)
def load_msrvtt(
    *,
    split: str = "test",
    n: int | None = None,
    seed: int | None = None,
    root: str | Path | None = None,
    video_root: str | Path | None = None,
    num_frames: int = 8,
    image_size: int | None = None,
    check_files: bool = True,
    **_: Any,
) -> MultimodalDataset:
    """MSR-VTT 1k-A test split, or the 9k training videos (see the module docstring for the layout)."""
    if split not in MSRVTT_SPLIT_SIZES:
        raise UnknownNameError("msrvtt split", split, MSRVTT_SPLIT_SIZES)
    if root is None:
        raise RobustMMError(f"msrvtt needs root=DIR holding {_CSV} and videos/all/ (or frames/)")
    image_size = DEFAULT_IMAGE_SIZE if image_size is None else int(image_size)
    if num_frames <= 0 or image_size <= 0:
        raise RobustMMError(f"num_frames and image_size must be positive, got {num_frames}, {image_size}")
    root = Path(root).expanduser()
    vroot = Path(video_root).expanduser() if video_root else None
    if split == "train":
        rows = _train_rows(root)
    else:
        path = _find(root, _CSV, "the 1k-A test split: key,vid_key,video_id,sentence")
        try:
            with open(path, newline="", encoding="utf-8") as f:
                rows = [(r["video_id"].strip(), [r["sentence"].strip()]) for r in csv.DictReader(f)]
        except (KeyError, AttributeError, csv.Error) as e:
            raise CheckpointError(f"msrvtt: {path} lacks the video_id/sentence columns ({e})") from None
    if not rows:
        raise EmptyDatasetError(f"msrvtt: no videos in split {split!r} under {root}")
    index, seed = choose_subset(len(rows), n, seed, f"msrvtt/{split}")
    rows = [rows[i] for i in index.tolist()]
    sources = [_source(root, vroot, vid) for vid, _ in rows]
    if check_files:
        missing = [s for s in sources if not s.exists()]
        if missing:
            raise MissingDataError(f"msrvtt: {len(missing)} of {len(sources)} videos not found, e.g. {missing[0]}")
    logger.info("loaded msrvtt/%s: %d videos from %s", split, len(rows), root)
    return MultimodalDataset(
        name="msrvtt", split=split, captions=[list(c) for _, c in rows],
        loaders={"video": VideoLoader([str(s) for s in sources], num_frames, image_size)}, seed=seed,
        meta={"num_frames": int(num_frames), "image_size": int(image_size),
              "decoded": "frames folders" if all(s.is_dir() for s in sources) else "mp4 (PyAV)"},
    )
