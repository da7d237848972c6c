"""Differentiable Kaldi-style log-mel filterbanks in plain torch, and the Bind audio recipes.

torchaudio cannot be installed beside the torch this project uses, so :func:`kaldi_fbank`
re-implements ``torchaudio.compliance.kaldi.fbank`` for the options ImageBind and LanguageBind
pass (``htk_compat=True, use_energy=False, window_type="hanning", dither=0.0, frame_length=25,
frame_shift=10``) and Kaldi's defaults for everything else: frames snipped at the edges, DC
offset removed per frame, pre-emphasis 0.97, a symmetric Hann window, zero padding to the next
power of two, the power spectrum, triangular mel filters between 20 Hz and Nyquist on the
``1127 ln(1 + f/700)`` scale, and ``log(max(energy, float eps))``. Every step is a torch op, so
gradients reach the waveform.

:func:`resample` is torchaudio's band-limited resampler in torch (both recipes resample every clip
to 16 kHz first); the recipes take ``input_rate`` for waveforms at another rate.

The two recipes on top:

* :class:`ImageBindAudio` (official ``data.py``): 16 kHz, 3 clips of 2 s at evenly spaced starts,
  128 mel bins, each clip's filterbank zero-padded/truncated to 204 frames, normalised with
  mean -4.268, std 9.138 -> (N, clips, 1, 128, 204).
* :class:`LanguageBindAudio` (``processing_audio.py``): 16 kHz, the whole waveform's filterbank
  (its mean removed first); longer than ``target_length`` frames: three chunks (front, middle,
  back -- the first start of each third, where the official code draws a random one); shorter:
  repeated up to ``target_length`` and stacked three times; normalised ``(x - mean) / (2 std)``
  -> (N, 3, mel_bins, target_length).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputShapeError, RobustMMError

__all__ = ["kaldi_fbank", "mel_banks", "resample", "ImageBindAudio", "LanguageBindAudio", "clip_starts"]

_PREEMPH = 0.97
_LOW_FREQ = 20.0


def _mel(f: torch.Tensor | float) -> torch.Tensor | float:
    if isinstance(f, torch.Tensor):
        return 1127.0 * torch.log1p(f / 700.0)
    return 1127.0 * math.log1p(f / 700.0)


def mel_banks(num_bins: int, padded_window: int, sample_rate: float, low_freq: float = _LOW_FREQ,
              high_freq: float = 0.0) -> torch.Tensor:
    """Kaldi's triangular mel filters: (num_bins, padded_window // 2 + 1), float64."""
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not 0.0 <= low_freq < high_freq <= nyquist:
        raise RobustMMError(f"mel filter range must satisfy 0 <= low < high <= Nyquist, got {low_freq}, {high_freq}")
    n_fft_bins = padded_window // 2
    bin_width = sample_rate / padded_window
    mel_low, mel_high = _mel(low_freq), _mel(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins, dtype=torch.float64).unsqueeze(1)
    left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    mel = _mel(bin_width * torch.arange(n_fft_bins, dtype=torch.float64)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.nn.functional.pad(banks, (0, 1))  # the Nyquist bin gets no weight


def kaldi_fbank(wave: torch.Tensor, sample_rate: float = 16000.0, num_mel_bins: int = 128,
                frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0) -> torch.Tensor:
    """Log-mel filterbank of mono waveforms: (N, samples) -> (N, frames, num_mel_bins).

    Matches ``torchaudio.compliance.kaldi.fbank(w, htk_compat=True, use_energy=False,
    window_type="hanning", dither=0.0, ...)`` applied to each row. Needs at least one frame of
    samples (400 at 16 kHz).
    """
    if wave.dim() != 2:
        raise InputShapeError(f"kaldi_fbank expects (N, samples), got {tuple(wave.shape)}")
    size = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    if wave.shape[1] < size:
        raise InputShapeError(f"audio: {wave.shape[1]} samples is shorter than one {frame_length_ms:g} ms frame ({size})")
    padded = 1 << (size - 1).bit_length()
    frames = wave.unfold(1, size, shift)  # (N, F, size), snip_edges=True
    frames = frames - frames.mean(dim=-1, keepdim=True)
    prev = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    frames = frames - _PREEMPH * prev
    window = torch.hann_window(size, periodic=False, dtype=frames.dtype, device=frames.device)
    frames = torch.nn.functional.pad(frames * window, (0, padded - size))
    spec = torch.fft.rfft(frames, dim=-1)
    power = spec.real.pow(2) + spec.imag.pow(2)  # |X|^2 without abs(): finite gradients at 0
    banks = mel_banks(num_mel_bins, padded, sample_rate).to(device=power.device, dtype=power.dtype)
    energy = power @ banks.T
    eps = torch.finfo(torch.float32).eps
    return torch.clamp(energy, min=eps).log()


def resample(wave: torch.Tensor, orig: int, new: int, zeros: int = 6, rolloff: float = 0.99) -> torch.Tensor:
    """Differentiable band-limited resampling (N, samples) ``orig`` Hz -> ``new`` Hz.

    The algorithm of ``torchaudio.functional.resample`` with its defaults (windowed sinc, Hann
    window, 6 zero crossings, roll-off 0.99), as a strided ``conv1d``.
    """
    if orig == new:
        return wave
    g = math.gcd(int(orig), int(new))
    o, n = int(orig) // g, int(new) // g
    base = min(o, n) * rolloff
    width = math.ceil(zeros * o / base)
    idx = torch.arange(-width, width + o, dtype=torch.float64)[None, :] / o
    t = ((torch.arange(0, -n, -1, dtype=torch.float64)[:, None] / n + idx) * base).clamp(-zeros, zeros)
    window = torch.cos(t * math.pi / zeros / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, torch.ones_like(t), t))
    kernel = (kernel * window * (base / o)).to(wave.dtype).to(wave.device)[:, None, :]  # (n, 1, L)
    y = torch.nn.functional.conv1d(torch.nn.functional.pad(wave[:, None], (width, width + o)), kernel, stride=o)
    return y.transpose(1, 2).reshape(wave.shape[0], -1)[:, : math.ceil(n * wave.shape[1] / o)]


def clip_starts(duration_s: float, clip_s: float, clips: int) -> list[float]:
    """Start times of ``clips`` evenly spaced clips (pytorchvideo ``ConstantClipsPerVideoSampler``)."""
    last = max(duration_s - clip_s, 0.0)
    if clips == 1:
        return [0.0]
    return [k * last / (clips - 1) for k in range(clips)]


class ImageBindAudio(nn.Module):
    """Waveforms (N, samples) at ``sample_rate`` -> ImageBind input (N, clips, 1, mel_bins, target_length)."""

    def __init__(self, sample_rate: int = 16000, num_mel_bins: int = 128, target_length: int = 204,
                 clip_duration: float = 2.0, clips: int = 3, mean: float = -4.268, std: float = 9.138,
                 input_rate: int | None = None):
        super().__init__()
        self.sample_rate, self.num_mel_bins, self.target_length = int(sample_rate), int(num_mel_bins), int(target_length)
        self.clip_duration, self.clips, self.mean, self.std = float(clip_duration), int(clips), float(mean), float(std)
        self.input_rate = int(input_rate or sample_rate)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Differentiable ImageBind audio preprocessing (waveforms at ``input_rate``)."""
        sr = self.sample_rate
        wave = resample(wave, self.input_rate, sr)
        out = []
        for start in clip_starts(wave.shape[1] / sr, self.clip_duration, self.clips):
            clip = wave[:, int(start * sr): int((start + self.clip_duration) * sr)]
            clip = clip - clip.mean(dim=1, keepdim=True)
            fb = kaldi_fbank(clip, sr, self.num_mel_bins).transpose(1, 2)  # (N, mel, frames)
            p = self.target_length - fb.shape[2]
            fb = torch.nn.functional.pad(fb, (0, p)) if p > 0 else fb[..., : self.target_length]
            out.append((fb.unsqueeze(1) - self.mean) / self.std)
        return torch.stack(out, dim=1)

    def info(self) -> dict[str, Any]:
        """The recipe (recorded in results)."""
        return {"recipe": "imagebind kaldi fbank", "sample_rate": self.sample_rate, "input_rate": self.input_rate,
                "mel_bins": self.num_mel_bins,
                "target_length": self.target_length, "clip_s": self.clip_duration, "clips": self.clips,
                "mean": self.mean, "std": self.std}


class LanguageBindAudio(nn.Module):
    """Waveforms (N, samples) at ``sample_rate`` -> LanguageBind input (N, 3, mel_bins, target_length)."""

    def __init__(self, sample_rate: int = 16000, num_mel_bins: int = 112, target_length: int = 1036,
                 mean: float = -4.2677393, std: float = 4.5689974, input_rate: int | None = None):
        super().__init__()
        self.sample_rate, self.num_mel_bins, self.target_length = int(sample_rate), int(num_mel_bins), int(target_length)
        self.mean, self.std = float(mean), float(std)
        self.input_rate = int(input_rate or sample_rate)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Differentiable LanguageBind audio preprocessing (waveforms at ``input_rate``)."""
        wave = resample(wave, self.input_rate, self.sample_rate)
        wave = wave - wave.mean(dim=1, keepdim=True)
        mel = kaldi_fbank(wave, self.sample_rate, self.num_mel_bins)  # (N, frames, mel)
        total, chunk = mel.shape[1], self.target_length
        if total > chunk:
            ranges = np.array_split(np.arange(total - chunk + 1), 3)
            starts = [int(r[0]) if len(r) else 0 for r in ranges]
            fused = torch.stack([mel[:, s: s + chunk] for s in starts], dim=1)
        else:
            if total < chunk:
                mel = mel.repeat(1, chunk // total + 1, 1)[:, :chunk]
            fused = torch.stack([mel, mel, mel], dim=1)
        return (fused.transpose(2, 3) - self.mean) / (self.std * 2)

    def info(self) -> dict[str, Any]:
        """The recipe (recorded in results)."""
        return {"recipe": "languagebind kaldi fbank", "sample_rate": self.sample_rate, "input_rate": self.input_rate,
                "mel_bins": self.num_mel_bins,
                "target_length": self.target_length, "mean": self.mean, "std": self.std}
