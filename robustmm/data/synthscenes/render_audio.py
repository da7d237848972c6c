"""Per-chunk renderer of the audio modality: a sonification of the scene (pitch <- colour,
timbre <- shape, loudness <- size, onset time <- x position)."""
from __future__ import annotations

import functools

import numpy as np

from .raster import SceneArrays, u8_noise
from .vocab import (
    AUDIO_NOISE,
    AUDIO_SAMPLES,
    COLORS,
    MAX_OBJECTS,
    ONSET_RANGE,
    PITCH_HZ,
    SAMPLE_RATE,
    SHAPES,
    SIZE_LOUDNESS,
    TIMBRE,
    TONE_SECONDS,
)


@functools.lru_cache(maxsize=1)
def _tone_table() -> np.ndarray:
    """Enveloped, peak-normalised tone of every (colour, shape, role): (8 * 6 * 2, AUDIO_SAMPLES).

    Role 0 is the main object (long tone), role 1 a distractor (short tone). Built once, so
    batched rendering only gathers and scales (no transcendental functions on batched data).
    """
    t = np.arange(AUDIO_SAMPLES, dtype=np.float64) / SAMPLE_RATE
    table = np.zeros((len(COLORS), len(SHAPES), 2, AUDIO_SAMPLES), np.float64)
    nyquist_guard = 0.95 * SAMPLE_RATE / 2
    for ci, c in enumerate(COLORS):
        f0 = PITCH_HZ[c]
        for si, s in enumerate(SHAPES):
            partials = [(r, a) for r, a in TIMBRE[s] if f0 * r < nyquist_guard]
            n = len(partials)
            wave = np.zeros_like(t)
            for j, (ratio, amp) in enumerate(partials):
                phase = np.pi * j * j / n  # Schroeder phases: a low crest factor for rich timbres
                wave += amp * np.sin(2 * np.pi * f0 * ratio * t + phase)
            wave /= np.abs(wave).max()
            for role, dur in enumerate(TONE_SECONDS):
                env = (np.clip(t / 0.01, 0, 1) * np.clip((dur - t) / 0.04, 0, 1)
                       * np.exp(-1.2 * t / dur))
                table[ci, si, role] = wave * env
    return table.reshape(-1, AUDIO_SAMPLES).astype(np.float32)


def render_audio(bt: SceneArrays) -> np.ndarray:
    """The (B, samples) waveforms of a chunk: one tone per object (pitch by shape and colour, loudness by
    size, onset by x) over noise."""
    table = _tone_table()
    rngs = bt.rngs("audio")
    noise = np.stack([u8_noise(rng, (AUDIO_SAMPLES,)) for rng in rngs])
    lo, hi = ONSET_RANGE
    onset = np.rint(SAMPLE_RATE * (lo + (hi - lo) * (bt.x.astype(np.float64) + 1) / 2)).astype(np.int64)
    role = np.zeros_like(bt.shape)
    role[:, 1:] = 1
    row = (bt.color * len(SHAPES) + bt.shape) * 2 + role  # (B, S)
    t = np.arange(AUDIO_SAMPLES)
    wave = np.float32(AUDIO_NOISE) * noise
    for k in range(MAX_OBJECTS):
        rel = t[None, :] - onset[:, k, None]  # (B, N)
        tone = table[row[:, k, None], np.clip(rel, 0, AUDIO_SAMPLES - 1)]
        gain = (SIZE_LOUDNESS[bt.size[:, k]] * bt.present[:, k])[:, None].astype(np.float32)
        wave = wave + tone * (gain * (rel >= 0))
    return np.clip(wave, -1, 1)
