"""Decoding one media item of any continuous modality, from a file or from bytes.

Used by every user-data loader (class folders, manifests, Hugging Face datasets, webdataset
shards). A *source* is a path (``str``) or ``(name, bytes)`` (a tar member, a datasets cell); the
name's extension picks the format:

=========== ========================================= ==========================================
modality    formats                                   output (raw domain of the modality)
=========== ========================================= ==========================================
image       .png .jpg .jpeg .bmp .webp                (3, size, size) in [0, 1]
depth       16-bit or 8-bit .png, .npy (metres)       (1, size, size): 1 near .. 0 at ``far_m``
thermal     16-bit or 8-bit .png/.jpg, .npy            (1, size, size) in [0, 1]
audio       .wav (stdlib), .flac (PyAV, `bind` extra)  (samples,) at ``sample_rate``, in [-1, 1]
video       a folder of frames, .mp4 .avi .mov .webm   (frames, 3, size, size) in [0, 1]
pointcloud  .npy .txt (x,y,z[,...]) .ply .off          (points, 6): xyz in the unit ball, rgb
=========== ========================================= ==========================================

:func:`probe` reads only what a header tells (size, sample rate, point count) so that corrupt,
empty and mismatched files are refused before any long work; :func:`decode` reads the item.
Both raise :class:`BadFileError`, one line naming the file.
"""
from __future__ import annotations

import io
import math
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import RobustMMError
from .media import resample, resize_crop
from .pointfiles import read_points

__all__ = ["BadFileError", "DecodeOptions", "EXTENSIONS", "LazySource", "Source", "decode", "probe", "source_name"]


class LazySource:
    """A source read only when decoded (a tar member, a row of a datasets table): subclasses set
    ``name`` (with the format's extension) and implement :meth:`read`."""

    name: str = ""

    def read(self) -> bytes:  # pragma: no cover - abstract
        """The item's bytes."""
        raise NotImplementedError


Source = str | tuple[str, bytes] | LazySource

EXTENSIONS: dict[str, tuple[str, ...]] = {
    "image": (".png", ".jpg", ".jpeg", ".bmp", ".webp"),
    "depth": (".png", ".npy"),
    "thermal": (".png", ".jpg", ".jpeg", ".npy"),
    "audio": (".wav", ".flac"),
    "video": (".mp4", ".avi", ".mov", ".webm", ".mkv"),  # and folders of frames
    "pointcloud": (".npy", ".txt", ".ply", ".off", ".xyz"),
}
_FRAMES = (".jpg", ".jpeg", ".png")


class BadFileError(RobustMMError):
    """A media file that is empty, corrupt or not the format its name says."""


@dataclass(frozen=True)
class DecodeOptions:
    """How items are brought to one shape: ``size`` (side of square images, None = native),
    ``sample_rate`` (Hz, None = native), ``seconds`` (clip length, None = set by the loader),
    ``frames`` (video), ``points`` (point clouds), ``depth_scale`` (16-bit units per metre) and
    ``far_m`` (depth at which the raw value reaches 0)."""

    size: int | None = 224
    sample_rate: int | None = 16000
    seconds: float | None = None
    frames: int = 8
    points: int | None = 1024
    depth_scale: float = 1000.0
    far_m: float = 10.0


def source_name(src: Source) -> str:
    """The file name (or member name) of a source, for messages."""
    if isinstance(src, LazySource):
        return src.name
    return src if isinstance(src, str) else src[0]


def _bytes(src: Source) -> bytes:
    if isinstance(src, str):
        try:
            data = Path(src).read_bytes()
        except FileNotFoundError:
            raise BadFileError(f"file not found: {src}") from None
    elif isinstance(src, LazySource):
        data = src.read()
    else:
        data = src[1]
    if not data:
        raise BadFileError(f"empty file (0 bytes): {source_name(src)}")
    return data


def _ext(src: Source) -> str:
    return Path(source_name(src)).suffix.lower()


def _pil(src: Source) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(_bytes(src)))
        im.load()
        return im
    except UnidentifiedImageError:
        raise BadFileError(f"cannot decode image {source_name(src)}: not a readable image file") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadFileError(f"cannot decode image {source_name(src)}: {e}") from None


def _audio(src: Source) -> tuple[np.ndarray, int]:
    if _ext(src) == ".flac":
        return _flac(src)
    try:
        with wave.open(io.BytesIO(_bytes(src)), "rb") as w:
            sr, ch, width, n = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError) as e:
        raise BadFileError(f"cannot read wav {source_name(src)}: {e} (PCM wav expected)") from None
    if width not in (1, 2, 4) or len(raw) < n * ch * width:
        raise BadFileError(f"cannot read wav {source_name(src)}: {8 * width}-bit or truncated samples")
    dtype = {1: np.uint8, 2: "<i2", 4: "<i4"}[width]
    x = np.frombuffer(raw[: n * ch * width], dtype).astype(np.float32)
    x = (x - 128.0) / 128.0 if width == 1 else x / float(1 << (8 * width - 1))
    return x.reshape(-1, ch).mean(axis=1), int(sr)


def _to_float(x: np.ndarray) -> np.ndarray:
    """PCM samples of any integer width, or floats, as float32 in [-1, 1]."""
    if np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
    return x.astype(np.float32)


def _mono(frame: Any) -> np.ndarray:
    """A PyAV audio frame as mono float32 samples (planar: one row per channel; packed: interleaved)."""
    x = _to_float(frame.to_ndarray())
    channels = len(frame.layout.channels)
    if not frame.format.is_planar and channels > 1:
        return x.reshape(-1, channels).mean(axis=1)
    return x.mean(axis=0) if x.ndim == 2 else x


def _flac(src: Source) -> tuple[np.ndarray, int]:
    try:
        import av
    except ImportError:
        raise BadFileError(f"{source_name(src)}: FLAC needs PyAV (pip install 'robustmm[bind]'), or convert to wav") from None
    try:
        with av.open(io.BytesIO(_bytes(src))) as c:
            stream = c.streams.audio[0]
            chunks = [_mono(f) for f in c.decode(stream)]
            sr = int(stream.rate)
    except BadFileError:
        raise
    except Exception as e:  # noqa: BLE001 - PyAV raises its own error classes
        raise BadFileError(f"cannot decode audio {source_name(src)}: {e}") from None
    if not chunks:
        raise BadFileError(f"audio {source_name(src)} has no samples")
    return np.concatenate(chunks).astype(np.float32), sr


def _frames(src: Source, count: int) -> list[np.ndarray]:
    if isinstance(src, str) and Path(src).is_dir():
        files = sorted(f for f in Path(src).iterdir() if f.suffix.lower() in _FRAMES)
        if not files:
            raise BadFileError(f"no frame images (.jpg/.png) in {src}")
        return [np.asarray(_pil(str(files[i])).convert("RGB")) for i in np.linspace(0, len(files) - 1, count, dtype=int)]
    try:
        import av
    except ImportError:
        raise BadFileError(f"{source_name(src)}: video files need PyAV (pip install 'robustmm[bind]'), "
                           "or extract the frames into a folder per video") from None
    try:
        with av.open(io.BytesIO(_bytes(src))) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    except BadFileError:
        raise
    except Exception as e:  # noqa: BLE001
        raise BadFileError(f"cannot decode video {source_name(src)}: {e}") from None
    if not frames:
        raise BadFileError(f"video {source_name(src)} has no frames")
    return [frames[i] for i in np.linspace(0, len(frames) - 1, count, dtype=int)]


def _square(arr: np.ndarray, size: int | None, mode: str = "bicubic") -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    x = x.permute(2, 0, 1) if x.dim() == 3 else x[None]
    return x.clamp(0, 1) if size is None else resize_crop(x, int(size), mode)


def _gray(src: Source) -> np.ndarray:
    """A one-channel map scaled by its bit depth to [0, 1] (npy: as stored)."""
    if _ext(src) == ".npy":
        return _npy(src).astype(np.float32)
    im = _pil(src)
    arr = np.asarray(im)
    if arr.ndim == 3:
        arr = arr[..., 0]
    full = 65535.0 if arr.dtype == np.uint16 or im.mode.startswith("I") else 255.0
    return arr.astype(np.float32) / full


def _npy(src: Source) -> np.ndarray:
    try:
        return np.load(io.BytesIO(_bytes(src)), allow_pickle=False)
    except BadFileError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise BadFileError(f"cannot read {source_name(src)}: {e}") from None


def decode(modality: str, src: Source, opts: DecodeOptions) -> torch.Tensor:
    """One item of ``modality`` from ``src`` in the modality's raw domain, brought to the shape
    ``opts`` asks for (the table in the module docstring)."""
    if modality == "image":
        x = torch.from_numpy(np.array(_pil(src).convert("RGB"))).permute(2, 0, 1).float().div_(255.0)
        return x if opts.size is None or tuple(x.shape[1:]) == (opts.size, opts.size) else resize_crop(x, int(opts.size))
    if modality == "thermal":
        return _square(_gray(src), opts.size, "bilinear")
    if modality == "depth":
        if _ext(src) == ".npy":
            metres = _npy(src).astype(np.float32)
        else:
            im = _pil(src)
            arr = np.asarray(im).astype(np.float32)
            metres = (arr[..., 0] if arr.ndim == 3 else arr) / (opts.depth_scale if arr.max() > 255 or im.mode.startswith("I")
                                                                else 255.0 / opts.far_m)
        return _square(1.0 - np.clip(metres, 0.0, opts.far_m) / opts.far_m, opts.size, "bilinear")
    if modality == "audio":
        x, sr = _audio(src)
        if opts.sample_rate is not None:
            x = resample(x, sr, int(opts.sample_rate))
        if opts.seconds is not None:
            length = int(round(opts.seconds * (opts.sample_rate or sr)))
            x = np.pad(x[:length], (0, max(0, length - len(x))))
        return torch.from_numpy(np.clip(x, -1.0, 1.0).astype(np.float32))
    if modality == "video":
        return torch.stack([_square(f.astype(np.float32) / 255.0, opts.size) for f in _frames(src, opts.frames)])
    if modality == "pointcloud":
        return torch.from_numpy(read_points(source_name(src), _bytes(src), opts.points))
    raise RobustMMError(f"no decoder for modality {modality!r}")


def _probe_image(src: Source) -> tuple[int, int]:
    """An image file's ``(width, height)`` from its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(_bytes(src))) as im:
            return tuple(im.size)
    except UnidentifiedImageError:
        raise BadFileError(f"cannot decode image {source_name(src)}: not a readable image file") from None
    except (OSError, SyntaxError) as e:
        raise BadFileError(f"cannot decode image {source_name(src)}: {e}") from None


def _probe_audio(src: Source) -> tuple[int, float]:
    """An audio file's ``(sample rate, seconds)``: a wav from its header, a flac by decoding it."""
    if _ext(src) == ".flac":
        x, sr = _flac(src)
        return sr, len(x) / sr
    try:
        with wave.open(io.BytesIO(_bytes(src)), "rb") as w:
            sr, n = w.getframerate(), w.getnframes()
    except (wave.Error, EOFError) as e:
        raise BadFileError(f"cannot read wav {source_name(src)}: {e} (PCM wav expected)") from None
    if n == 0 or sr <= 0:
        raise BadFileError(f"wav {source_name(src)} has no samples")
    return sr, n / sr


def _probe_video(src: Source) -> tuple[()]:
    """Checks a video is there: a folder holds frame images, a file can be read."""
    if isinstance(src, str) and Path(src).is_dir():
        if not any(f.suffix.lower() in _FRAMES for f in Path(src).iterdir()):
            raise BadFileError(f"no frame images (.jpg/.png) in {src}")
    else:
        _bytes(src)
    return ()


def probe(modality: str, src: Source) -> tuple[Any, ...]:
    """What a header tells of one item without decoding it (for checks before any work):
    image-like ``(width, height)``, audio ``(sample rate, seconds)``, point clouds ``(points,)``,
    video ``()``. Raises :class:`BadFileError` for an empty or unreadable file."""
    if modality in ("image", "thermal", "depth") and _ext(src) != ".npy":
        return _probe_image(src)
    if modality in ("depth", "thermal"):
        return tuple(_npy(src).shape)
    if modality == "audio":
        return _probe_audio(src)
    if modality == "pointcloud":
        return (int(read_points(source_name(src), _bytes(src), None).shape[0]),)
    if modality == "video":
        return _probe_video(src)
    raise RobustMMError(f"no decoder for modality {modality!r}")


def clip_seconds(durations: list[float]) -> float:
    """The common clip length of a set of audio items: the longest one, in whole milliseconds."""
    return math.ceil(max(durations) * 1000.0) / 1000.0 if durations else 1.0
