"""Tiny user datasets written into a folder, one builder per format (tests and the guide's style)."""
from __future__ import annotations

import io
import json
import tarfile
import wave
from pathlib import Path

import numpy as np
from PIL import Image

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def png_bytes(color: tuple[int, int, int], i: int = 0, size: int = 20) -> bytes:
    """A small solid PNG with a slight per-item shade."""
    arr = np.zeros((size, size + 4, 3), np.uint8) + np.array(color, np.uint8)
    arr[: 2 + i % 5] = np.clip(arr[: 2 + i % 5].astype(int) + 20, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def wav_bytes(freq: float, rate: int = 8000, seconds: float = 0.25) -> bytes:
    """A 16-bit mono sine."""
    t = np.arange(int(rate * seconds)) / rate
    x = (0.5 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(x.tobytes())
    return buf.getvalue()


def image_folder(root: Path, per_class: int = 3) -> Path:
    """root/CLASS/i.png for three colour classes."""
    for name, color in COLORS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i}.png").write_bytes(png_bytes(color, i))
    return root


def audio_folder(root: Path, per_class: int = 3, rate: int = 8000) -> Path:
    """root/CLASS/i.wav: low and high tones."""
    for name, freq in (("low_tone", 220.0), ("high_tone", 1760.0)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i}.wav").write_bytes(wav_bytes(freq * (1 + 0.05 * i), rate))
    return root


def point_folder(root: Path, per_class: int = 3) -> Path:
    """root/CLASS/i.{npy,txt,ply}: spheres and flat squares."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("sphere", "plane")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            p = rng.normal(size=(200, 3))
            p = p / np.linalg.norm(p, axis=1, keepdims=True) if c == 0 else np.c_[p[:, :2], np.zeros(200)]
            if i % 3 == 0:
                np.save(root / name / f"{i}.npy", p.astype(np.float32))
            elif i % 3 == 1:
                np.savetxt(root / name / f"{i}.txt", np.c_[p, p], delimiter=",", fmt="%.5f")
            else:
                head = (f"ply\nformat ascii 1.0\nelement vertex {len(p)}\n"
                        "property float x\nproperty float y\nproperty float z\nend_header\n")
                (root / name / f"{i}.ply").write_text(head + "\n".join(" ".join(f"{v:.5f}" for v in r) for r in p) + "\n")
    return root


def jsonl_manifest(root: Path, per_class: int = 3) -> Path:
    """root/media/*.png and root/manifest.jsonl with path, captions and label."""
    (root / "media").mkdir(parents=True, exist_ok=True)
    rows = []
    for name, color in COLORS.items():
        for i in range(per_class):
            (root / "media" / f"{name}{i}.png").write_bytes(png_bytes(color, i))
            rows.append({"path": f"media/{name}{i}.png", "captions": [f"a {name} square.", f"something {name}."], "label": name})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "manifest.jsonl"


def wds_shard(root: Path, per_class: int = 3) -> Path:
    """root/shard-000000.tar with KEY.png, KEY.txt, KEY.cls and root/classnames.txt."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classnames.txt").write_text("\n".join(COLORS) + "\n")
    with tarfile.open(root / "shard-000000.tar", "w") as tar:
        k = 0
        for c, (name, color) in enumerate(COLORS.items()):
            for i in range(per_class):
                for ext, data in (("png", png_bytes(color, i)), ("txt", f"a {name} square.".encode()), ("cls", str(c).encode())):
                    info = tarfile.TarInfo(f"{k:06d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                k += 1
    return root


def hf_dataset(root: Path, per_class: int = 3) -> Path:
    """A Hugging Face dataset saved with save_to_disk: image, text, label (ClassLabel)."""
    import datasets

    images, texts, labels = [], [], []
    for c, (name, color) in enumerate(COLORS.items()):
        for i in range(per_class):
            images.append(Image.open(io.BytesIO(png_bytes(color, i))))
            texts.append(f"a {name} square.")
            labels.append(c)
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=list(COLORS))})
    ds = datasets.Dataset.from_dict({"image": images, "text": texts, "label": labels}, features=features)
    ds.save_to_disk(str(root))
    return root


def imagenet_val(root: Path, wnids: tuple[str, ...] = ("n01440764", "n01443537", "n01484850"), per_class: int = 2,
                 mapping: bool = True) -> Path:
    """root/val/WNID/ILSVRC2012_val_*.JPEG and, with ``mapping``, the 1000-line LOC_synset_mapping.txt
    whose first lines are the real first synsets (tench, goldfish, great white shark)."""
    k = 0
    for c, wnid in enumerate(wnids):
        (root / "val" / wnid).mkdir(parents=True, exist_ok=True)
        for _ in range(per_class):
            k += 1
            Image.open(io.BytesIO(png_bytes(list(COLORS.values())[c % 3], k))).convert("RGB").save(
                root / "val" / wnid / f"ILSVRC2012_val_{k:08d}.JPEG", format="JPEG")
    if mapping:
        lines = ["n01440764 tench, Tinca tinca", "n01443537 goldfish, Carassius auratus",
                 "n01484850 great white shark, white shark"] + [f"n9{i:07d} filler" for i in range(997)]
        (root / "LOC_synset_mapping.txt").write_text("\n".join(lines) + "\n")
    return root


def modelnet_resampled(root: Path, classes: tuple[str, ...] = ("airplane", "bathtub", "bed"), per_class: int = 2) -> Path:
    """modelnet40_normal_resampled layout with three classes (x,y,z,nx,ny,nz .txt files)."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    (root / "modelnet40_shape_names.txt").write_text("\n".join(classes) + "\n")
    ids = {"train": [], "test": []}
    for c in classes:
        (root / c).mkdir(exist_ok=True)
        for i in range(per_class * 2):
            sid = f"{c}_{i + 1:04d}"
            pts = rng.normal(size=(300, 3)) * (1 + classes.index(c))
            np.savetxt(root / c / f"{sid}.txt", np.c_[pts, pts / np.linalg.norm(pts, axis=1, keepdims=True)],
                       delimiter=",", fmt="%.6f")
            ids["test" if i < per_class else "train"].append(sid)
    for split, v in ids.items():
        (root / f"modelnet40_{split}.txt").write_text("\n".join(v) + "\n")
    return root


def modelnet_off(root: Path, classes: tuple[str, ...] = ("airplane", "bathtub"), per_class: int = 2) -> Path:
    """ModelNet40 .off layout: root/CLASS/{train,test}/CLASS_NNNN.off (ModelNet's one-line header)."""
    rng = np.random.default_rng(2)
    for c in classes:
        for split in ("train", "test"):
            (root / c / split).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                v = rng.normal(size=(50, 3))
                faces = "\n".join(f"3 {j} {j + 1} {j + 2}" for j in range(10))
                (root / c / split / f"{c}_{i + 1:04d}.off").write_text(
                    f"OFF{len(v)} 10 0\n" + "\n".join(" ".join(f"{x:.4f}" for x in r) for r in v) + "\n" + faces + "\n")
    return root


def gray16_folder(root: Path, per_class: int = 2) -> Path:
    """root/CLASS/i.png as 16-bit gray PNGs (depth in millimetres, or raw thermal counts)."""
    for c, name in enumerate(("near", "far")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = np.full((12, 14), 800 + 6000 * c + 100 * i, np.uint16)
            arr[:3] += 500
            Image.fromarray(arr).save(root / name / f"{i}.png")
    return root


def video_folder(root: Path, per_class: int = 2, frames: int = 3) -> Path:
    """root/CLASS/VIDEO/frame_k.png: a folder of frames per video."""
    for name, color in list(COLORS.items())[:2]:
        for i in range(per_class):
            clip = root / name / f"clip{i}"
            clip.mkdir(parents=True, exist_ok=True)
            for k in range(frames):
                (clip / f"frame_{k:03d}.png").write_bytes(png_bytes(color, i + k))
    return root


def mp4_bytes(color: tuple[int, int, int], frames: int = 4, side: int = 32) -> bytes:
    """A tiny mpeg4 video of one colour (PyAV, the `bind` extra)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=4)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        for k in range(frames):
            arr = np.zeros((side, side, 3), np.uint8) + np.array(color, np.uint8)
            arr[:k + 1] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def flac_bytes(freq: float, rate: int = 8000, seconds: float = 0.25) -> bytes:
    """A 16-bit mono FLAC sine (PyAV)."""
    import av

    t = np.arange(int(rate * seconds)) / rate
    x = (0.5 * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16)[None]
    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(x, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()
