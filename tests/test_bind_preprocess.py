"""Bind preprocessing parity: each torch transform against an independent re-computation of the
published recipe on the same input, and gradients reaching the raw input.

References: a numpy Kaldi filterbank written here from Kaldi's definitions (mel-computations.cc:
per-frame DC removal, pre-emphasis 0.97, Hann window ``0.5 - 0.5 cos(2 pi n / (N - 1))``, FFT size
the next power of two, power spectrum, triangular filters on ``1127 ln(1 + f / 700)`` from 20 Hz
to Nyquist, ``log(max(e, eps))``), in float64; the clip/chunk logic of ImageBind's ``data.py`` and
LanguageBind's ``processing_audio.py`` re-done in numpy; torchvision's own transforms on float
tensors for the image-like towers (what LanguageBind's processors call).

Tolerances: 2e-3 absolute on log-mel values (float32 vs float64; energies span ~1e-7..1e3),
1e-5 on normalised pixels.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision import transforms as T

from robustmm.data.media import resample as np_resample
from robustmm.encoders.audio_features import ImageBindAudio, LanguageBindAudio, kaldi_fbank, resample
from robustmm.encoders.bind_preprocess import (
    OPENAI_MEAN,
    OPENAI_STD,
    DepthToLanguageBind,
    GrayToRGB,
    ResizeCropNormalize,
    VideoFrames,
)

pytestmark = pytest.mark.usefixtures("one_thread")
FBANK_ATOL = 2e-3
PIXEL_ATOL = 1e-5


def np_fbank(wave: np.ndarray, sr: int = 16000, bins: int = 128) -> np.ndarray:
    """Kaldi fbank (htk_compat, no energy, hanning, no dither, snip edges), float64, one waveform."""
    size, shift = int(sr * 0.025), int(sr * 0.010)
    nfft = 1
    while nfft < size:
        nfft *= 2
    n_frames = 1 + (len(wave) - size) // shift
    hann = np.array([0.5 - 0.5 * math.cos(2 * math.pi * i / (size - 1)) for i in range(size)])
    mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)  # noqa: E731
    lo, hi = mel(20.0), mel(sr / 2)
    step = (hi - lo) / (bins + 1)
    banks = np.zeros((bins, nfft // 2 + 1))
    for b in range(bins):
        left, center, right = lo + b * step, lo + (b + 1) * step, lo + (b + 2) * step
        for i in range(nfft // 2):
            m = mel(i * sr / nfft)
            if left < m < right:
                banks[b, i] = (m - left) / (center - left) if m <= center else (right - m) / (right - center)
    out = np.zeros((n_frames, bins))
    for f in range(n_frames):
        frame = wave[f * shift: f * shift + size].astype(np.float64).copy()
        frame -= frame.mean()
        for i in range(size - 1, 0, -1):
            frame[i] -= 0.97 * frame[i - 1]
        frame[0] -= 0.97 * frame[0]
        spec = np.fft.rfft(np.concatenate([frame * hann, np.zeros(nfft - size)]))
        out[f] = np.log(np.maximum(banks @ (np.abs(spec) ** 2), np.finfo(np.float32).eps))
    return out


def tone(n: int, seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(16000 * seconds)) / 16000.0
    f = 100.0 + 3000.0 * torch.rand(n, 1, generator=g)
    return 0.4 * torch.sin(2 * math.pi * f * t) + 0.05 * torch.randn(n, t.numel(), generator=g)


def test_kaldi_fbank_matches_numpy_reference():
    wave = tone(2, 0.3)
    ours = kaldi_fbank(wave, 16000, 128).numpy()
    assert ours.shape == (2, 1 + (4800 - 400) // 160, 128)
    for i in range(2):
        np.testing.assert_allclose(ours[i], np_fbank(wave[i].numpy()), atol=FBANK_ATOL, rtol=0)


def test_imagebind_audio_matches_recipe():
    wave = tone(1, 5.0, seed=1)  # an ESC-50 clip: 3 clips of 2 s at 0, 1.5, 3.0 s
    ours = ImageBindAudio()(wave)
    assert ours.shape == (1, 3, 1, 128, 204)
    w = wave[0].numpy().astype(np.float64)
    for k, start in enumerate((0.0, 1.5, 3.0)):
        clip = w[int(start * 16000): int((start + 2.0) * 16000)]
        fb = np_fbank(clip - clip.mean()).T  # (128, 198)
        fb = np.pad(fb, ((0, 0), (0, 204 - fb.shape[1])))
        np.testing.assert_allclose(ours[0, k, 0].numpy(), (fb + 4.268) / 9.138, atol=FBANK_ATOL / 9.138, rtol=0)


@pytest.mark.parametrize("seconds, target", [(0.5, 100), (1.2, 60)])
def test_languagebind_audio_matches_recipe(seconds, target):
    wave = tone(1, seconds, seed=2)
    ours = LanguageBindAudio(num_mel_bins=64, target_length=target)(wave)
    assert ours.shape == (1, 3, 64, target)
    w = wave[0].numpy().astype(np.float64)
    mel = np_fbank(w - w.mean(), bins=64)
    total = mel.shape[0]
    if total > target:  # three chunks: the first start of each third of the possible starts
        starts = [int(r[0]) for r in np.array_split(np.arange(total - target + 1), 3)]
        fused = np.stack([mel[s: s + target] for s in starts])
    else:
        rep = np.tile(mel, (target // total + 1, 1))[:target]
        fused = np.stack([rep] * 3)
    want = (fused.transpose(0, 2, 1) + 4.2677393) / (4.5689974 * 2)
    np.testing.assert_allclose(ours[0].numpy(), want, atol=FBANK_ATOL / 9, rtol=0)


@pytest.mark.parametrize("orig, new", [(44100, 16000), (8000, 16000)])
def test_torch_resampler_matches_numpy_and_keeps_tones(orig, new):
    t = np.arange(orig // 4) / orig
    x = (0.5 * np.sin(2 * math.pi * 440.0 * t)).astype(np.float32)
    ours = resample(torch.from_numpy(x)[None], orig, new)[0].numpy()
    np.testing.assert_allclose(ours, np_resample(x, orig, new), atol=1e-5, rtol=0)  # the data layer's copy
    want = 0.5 * np.sin(2 * math.pi * 440.0 * np.arange(len(ours)) / new)
    np.testing.assert_allclose(ours[200:-200], want[200:-200], atol=2e-3)


def test_recipes_resample_other_input_rates():
    wave16 = tone(1, 1.0)
    wave8 = torch.from_numpy(np_resample(wave16[0].numpy(), 16000, 8000))[None]
    a = LanguageBindAudio(num_mel_bins=64, target_length=100)(wave16)
    b = LanguageBindAudio(num_mel_bins=64, target_length=100, input_rate=8000)(wave8)
    assert a.shape == b.shape
    low = slice(0, 40)  # mel bins below ~3.3 kHz: the 8 kHz copy carries nothing above 4 kHz
    assert (a[:, :, low] - b[:, :, low]).abs().mean() < 0.01  # another tone differs by ~0.2


def tv_image(size: int):
    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                      T.Normalize(OPENAI_MEAN, OPENAI_STD)])


def test_image_thermal_depth_match_torchvision_recipe():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 40, 52, generator=g)
    ref = tv_image(32)
    torch.testing.assert_close(ResizeCropNormalize((32, 32))(img), torch.stack([ref(i) for i in img]), atol=PIXEL_ATOL, rtol=0)
    th = torch.rand(2, 1, 44, 36, generator=g)  # LanguageBind thermal: the 1-channel image as 3 channels
    torch.testing.assert_close(GrayToRGB(ResizeCropNormalize((32, 32)))(th),
                               torch.stack([ref(i.repeat(3, 1, 1)) for i in th]), atol=PIXEL_ATOL, rtol=0)
    depth = torch.rand(2, 1, 36, 36, generator=g)  # 1 = near; 0 = 10 m
    metres = (1 - depth.numpy()) * 10.0
    norm = np.clip(np.clip(metres, 0.01, None), None, 10.0) / 10.0  # DepthNorm(max_depth=10)
    want = torch.stack([ref(torch.from_numpy(d).float().repeat(3, 1, 1)) for d in norm])
    ours = GrayToRGB(ResizeCropNormalize((32, 32)))(DepthToLanguageBind(10.0, 10.0)(depth))
    torch.testing.assert_close(ours, want, atol=PIXEL_ATOL, rtol=0)


def test_video_frames_match_recipe():
    g = torch.Generator().manual_seed(1)
    video = torch.rand(1, 11, 3, 36, 44, generator=g)
    ours = VideoFrames(4, ResizeCropNormalize((32, 32)))(video)
    idx = np.linspace(0, 10, 4, dtype=int)  # decord: frame ids, then the transform on each frame
    want = torch.stack([tv_image(32)(video[0, i]) for i in idx])
    torch.testing.assert_close(ours[0], want, atol=PIXEL_ATOL, rtol=0)


@pytest.mark.parametrize("name", ["fbank", "imagebind_audio", "languagebind_audio", "resample", "image", "video", "depth"])
def test_gradients_reach_raw_input(name):
    if name in ("fbank", "imagebind_audio", "languagebind_audio", "resample"):
        x = tone(2, 2.5).requires_grad_(True)
        fn = {"fbank": lambda w: kaldi_fbank(w), "imagebind_audio": ImageBindAudio(),
              "resample": lambda w: resample(w, 16000, 44100),
              "languagebind_audio": LanguageBindAudio(num_mel_bins=64, target_length=100)}[name]
    elif name == "video":
        x = torch.rand(2, 6, 3, 36, 40).requires_grad_(True)
        fn = VideoFrames(3, ResizeCropNormalize((32, 32)))
    elif name == "depth":
        x = torch.rand(2, 1, 36, 40).requires_grad_(True)
        fn = torch.nn.Sequential(DepthToLanguageBind(), GrayToRGB(ResizeCropNormalize((32, 32))))
    else:
        x = torch.rand(2, 3, 36, 40).requires_grad_(True)
        fn = ResizeCropNormalize((32, 32))
    y = fn(x)
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad[0].abs() > 0).float().mean() > 0.3  # most raw samples/pixels influence the output


def test_imagebind_video_matches_recipe():
    """5 clips of 2 frames (pytorchvideo UniformTemporalSubsample on each window), ShortSideScale
    (bilinear, no antialias), Normalize, ImageBind's uniform_crop center offsets (ceil)."""
    from robustmm.encoders.imagebind_preprocess import ImageBindVideo

    g = torch.Generator().manual_seed(3)
    video = torch.rand(1, 10, 3, 36, 45, generator=g)
    ours = ImageBindVideo(32, clips=5)(video)
    assert ours.shape == (1, 5, 3, 2, 32, 32)
    scale = T.Compose([T.Resize(32, interpolation=T.InterpolationMode.BILINEAR, antialias=False),
                       T.Normalize(OPENAI_MEAN, OPENAI_STD)])
    for k in range(5):
        window = video[0, 2 * k: 2 * k + 2]  # 10 frames in 5 windows of 2
        idx = torch.linspace(0, 1, 2).clamp(0, 1).long()
        frames = scale(window[idx])  # (2, 3, 32, 40)
        off = math.ceil((frames.shape[-1] - 32) / 2)
        want = frames[..., :, off: off + 32].transpose(0, 1)  # (3, 2, 32, 32)
        torch.testing.assert_close(ours[0, k], want, atol=PIXEL_ATOL, rtol=0)


def test_imagebind_depth_and_thermal_recipes():
    from robustmm.encoders.imagebind_preprocess import ImageBindDepth, ImageBindThermal

    g = torch.Generator().manual_seed(4)
    depth = torch.rand(2, 1, 32, 32, generator=g)
    metres = np.clip((1 - depth.numpy()) * 10.0, 0.01, 50.0)
    disparity = 0.075 * 518.857901 / metres
    want = (torch.from_numpy(disparity).float() - 0.0418) / 0.0295
    torch.testing.assert_close(ImageBindDepth(32)(depth), want, atol=1e-3, rtol=1e-5)
    th = torch.rand(2, 1, 40, 36, generator=g)
    ref = T.Compose([T.Resize(32, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(32)])
    torch.testing.assert_close(ImageBindThermal(32)(th), torch.stack([ref(i) for i in th]), atol=PIXEL_ATOL, rtol=0)
