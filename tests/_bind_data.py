"""Small fixture files in the real on-disk formats of the Bind benchmarks (ESC-50, MSR-VTT, NYU-Depth v2, LLVIP)."""
from __future__ import annotations

import csv
import json
import math
import wave
from pathlib import Path

import numpy as np
from PIL import Image

ESC_CATEGORIES = ("dog", "rooster", "chirping_birds")


def write_wav(path: Path, x: np.ndarray, sr: int, width: int = 2, channels: int = 1) -> None:
    """PCM wav from float samples in [-1, 1] (``channels`` identical channels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.repeat(x[:, None], channels, axis=1).reshape(-1)
    if width == 2:
        data = (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()
    elif width == 3:
        v = (np.clip(x, -1, 1) * (2 ** 23 - 1)).astype(np.int32)
        data = np.stack([(v >> s) & 0xFF for s in (0, 8, 16)], axis=1).astype(np.uint8).tobytes()
    else:
        raise ValueError(width)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(sr)
        w.writeframes(data)


def write_esc50(root: Path, per_fold: int = 2) -> None:
    """meta/esc50.csv + audio/*.wav (5 s, 44.1 kHz, mono, 16-bit): tones whose pitch is the class."""
    rows = []
    t = np.arange(5 * 44100) / 44100.0
    for fold in range(1, 6):
        for k in range(per_fold):
            target = (fold + k) % len(ESC_CATEGORIES)
            name = f"{fold}-{1000 + k}-A-{target}.wav"
            write_wav(root / "audio" / name, 0.3 * np.sin(2 * math.pi * 300 * (target + 1) * t), 44100)
            rows.append({"filename": name, "fold": fold, "target": target, "category": ESC_CATEGORIES[target],
                         "esc10": "False", "src_file": 1000 + k, "take": "A"})
    (root / "meta").mkdir(parents=True, exist_ok=True)
    with open(root / "meta" / "esc50.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _frames(d: Path, rng: np.random.Generator, frames: int) -> None:
    d.mkdir(parents=True)
    for k in range(frames):
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(d / f"{k + 1:05d}.png")


def write_msrvtt(root: Path, n: int = 6, frames: int = 5, n_train: int = 4) -> None:
    """MSRVTT_JSFUSION_test.csv (+ the 9k-split files, under msrvtt_data/) + frames folders (frames/<video_id>/)."""
    rng = np.random.default_rng(0)
    with open(root / "MSRVTT_JSFUSION_test.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "vid_key", "video_id", "sentence"])
        for i in range(n):
            vid = f"video{7010 + i}"
            w.writerow([f"ret{i}", f"msr{7010 + i}", vid, f"a person is cooking dish number {i}"])
            _frames(root / "frames" / vid, rng, frames)
    (root / "msrvtt_data").mkdir(exist_ok=True)
    with open(root / "msrvtt_data" / "MSRVTT_train.9k.csv", "w", newline="") as f:
        f.write("video_id\n" + "".join(f"video{i}\n" for i in range(n_train)))
    sentences = [{"video_id": f"video{i}", "caption": f"a dog runs in a park, take {k}", "sen_id": 2 * i + k}
                 for i in range(n_train) for k in range(2)]
    (root / "msrvtt_data" / "MSRVTT_data.json").write_text(json.dumps({"videos": [], "sentences": sentences}))
    for i in range(n_train):
        _frames(root / "frames" / f"video{i}", rng, frames)


def depth_png(path: Path, rng: np.random.Generator, shape: tuple[int, int] = (30, 40)) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    mm = rng.integers(0, 12000, shape).astype(np.uint16)  # up to 12 m, past the 10 m far plane
    Image.fromarray(mm).save(path)
    return mm


def write_nyu(root: Path, layout: str = "folders", n: int = 6, split: str = "test") -> None:
    """16-bit depth PNGs in mm: class folders (val/<scene>/) or the nicr layout ({split}/depth + {split}/scene)."""
    rng = np.random.default_rng(1 if split == "test" else 11)
    scenes = ["bedroom", "dining_room", "study", "kitchen"]  # "study" is not one of the 10: -> others
    for i in range(n):
        scene = scenes[i % len(scenes)]
        if layout == "folders":
            if scene == "study":
                scene = "others"
            depth_png(root / "val" / scene / f"{i:04d}.png", rng)
        else:
            depth_png(root / split / "depth" / f"{i:04d}.png", rng)
            (root / split / "scene").mkdir(parents=True, exist_ok=True)
            (root / split / "scene" / f"{i:04d}.txt").write_text(scene + "\n")


def write_llvip(root: Path, n_images: int = 3, split: str = "test") -> None:
    """The LLVIP release: infrared/{split}/*.jpg (gray as RGB) + Annotations/*.xml (VOC person boxes)."""
    rng = np.random.default_rng(2 if split == "test" else 12)
    (root / "infrared" / split).mkdir(parents=True)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        name = f"{190001 + i:06d}" if split == "test" else f"{10001 + i:06d}"
        gray = rng.integers(0, 120, (96, 128), dtype=np.uint8)
        gray[20:70, 10 + 30 * i: 34 + 30 * i] = 230  # a warm pedestrian
        Image.fromarray(np.stack([gray] * 3, axis=-1)).save(root / "infrared" / split / f"{name}.jpg")
        objs = f"<object><name>person</name><bndbox><xmin>{10 + 30 * i}</xmin><ymin>20</ymin>" \
               f"<xmax>{34 + 30 * i}</xmax><ymax>70</ymax></bndbox></object>"
        if i == 0:  # a box below min_box is skipped
            objs += ("<object><name>person</name><bndbox><xmin>100</xmin><ymin>80</ymin><xmax>104</xmax><ymax>84</ymax>"
                     "</bndbox></object>")
        (root / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><size><width>128</width><height>96</height></size>{objs}</annotation>")
