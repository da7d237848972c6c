"""Reading the media files of the Bind benchmarks without new dependencies.

* :func:`read_wav` -- PCM ``.wav`` (8/16/24/32-bit, any channel count -> mono mean) with the
  stdlib :mod:`wave` module, as float32 in [-1, 1].
* :func:`resample` -- band-limited resampling, the algorithm of ``torchaudio.functional.resample``
  with its defaults (windowed sinc, Hann window, 6 zero crossings, roll-off 0.99), which the
  ImageBind and LanguageBind loaders apply to every clip; here in numpy.
* :func:`load_gray` / :func:`load_depth_png` / :func:`load_rgb` -- image files resized
  (shorter side, bicubic, antialiased) and center-cropped to a square, as float32 tensors.
"""
from __future__ import annotations

import math
import wave
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CheckpointError, MissingDataError

__all__ = ["read_wav", "resample", "load_gray", "load_rgb", "load_depth_png", "resize_crop"]


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A PCM wav file -> (mono float32 samples in [-1, 1], sample rate)."""
    try:
        with wave.open(str(path), "rb") as w:
            sr, ch, width, n = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
            raw = w.readframes(n)
    except FileNotFoundError:
        raise MissingDataError(f"audio file not found: {path}") from None
    except (wave.Error, EOFError) as e:
        raise CheckpointError(f"cannot read wav {path}: {e} (PCM wav expected)") from None
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    else:
        raise CheckpointError(f"cannot read wav {path}: {8 * width}-bit samples")
    return x.reshape(-1, ch).mean(axis=1).astype(np.float32), int(sr)


def resample(x: np.ndarray, orig: int, new: int, width_zeros: int = 6, rolloff: float = 0.99) -> np.ndarray:
    """Resample a 1-D signal from ``orig`` Hz to ``new`` Hz (torchaudio's sinc_interp_hann defaults)."""
    if orig == new:
        return x.astype(np.float32)
    g = math.gcd(int(orig), int(new))
    o, n = int(orig) // g, int(new) // g
    base = min(o, n) * rolloff
    width = math.ceil(width_zeros * o / base)
    idx = np.arange(-width, width + o, dtype=np.float64)[None, :] / o
    t = (np.arange(0, -n, -1, dtype=np.float64)[:, None] / n + idx) * base
    t = np.clip(t, -width_zeros, width_zeros)
    window = np.cos(t * math.pi / width_zeros / 2) ** 2
    t = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        sinc = np.where(t == 0, 1.0, np.sin(t) / np.where(t == 0, 1.0, t))
    kernel = sinc * window * (base / o)  # (n, L)
    padded = np.pad(x.astype(np.float64), (width, width + o))
    frames = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[1])[::o]
    out = (frames @ kernel.T).reshape(-1)
    return out[: math.ceil(n * len(x) / o)].astype(np.float32)


def resize_crop(x: torch.Tensor, size: int, mode: str = "bicubic") -> torch.Tensor:
    """(C, H, W) float -> (C, size, size): shorter side to ``size`` (antialiased), center crop."""
    h, w = x.shape[-2:]
    out = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    if out != (h, w):
        x = F.interpolate(x[None], size=out, mode=mode, antialias=mode != "nearest",
                          **({} if mode == "nearest" else {"align_corners": False}))[0]
    top, left = int(round((out[0] - size) / 2.0)), int(round((out[1] - size) / 2.0))
    return x[:, top: top + size, left: left + size].clamp(0.0, 1.0).contiguous()


def open_image(path: str | Path) -> Any:
    """Open an image file with PIL; a missing file or an undecodable one is a one-line error."""
    from PIL import Image

    try:
        return Image.open(path)
    except FileNotFoundError:
        raise MissingDataError(f"image file not found: {path}") from None
    except OSError as e:
        raise CheckpointError(f"cannot decode image {path}: {e}") from None


def load_rgb(path: str | Path, size: int) -> torch.Tensor:
    """An image file -> (3, size, size) float32 in [0, 1]."""
    with open_image(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return resize_crop(torch.from_numpy(arr.copy()).permute(2, 0, 1), size)


def load_gray(path: str | Path, size: int) -> torch.Tensor:
    """An image file (LLVIP infrared JPGs are gray stored as RGB) -> (1, size, size) in [0, 1]."""
    with open_image(path) as im:
        arr = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    return resize_crop(torch.from_numpy(arr.copy())[None], size)


def load_depth_png(path: str | Path, size: int, scale: float = 1000.0, far_m: float = 10.0) -> torch.Tensor:
    """A 16-bit depth PNG (``value / scale`` metres, 0 = no reading) -> (1, size, size) raw depth.

    robustmm's depth domain: 1 = near, 0 = ``far_m`` or farther; ``raw = 1 - min(d, far_m) / far_m``.
    """
    with open_image(path) as im:
        arr = np.asarray(im, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[..., 0]
    metres = np.clip(arr / scale, 0.0, far_m)
    raw = 1.0 - metres / far_m
    return resize_crop(torch.from_numpy(raw.copy())[None], size, mode="bilinear")
