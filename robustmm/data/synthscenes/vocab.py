"""The SynthScenes vocabulary (shapes, colours, sizes, splits) and how every attribute looks,
feels and sounds in each modality: the constants the sampler and the renderers share."""
from __future__ import annotations

import numpy as np

GENERATOR_VERSION = 1

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")
COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "white")
SIZES: tuple[str, ...] = ("tiny", "small", "large")
MAIN_SIZES: tuple[str, ...] = ("small", "large")  # the main object's sizes (distractors are tiny)
ALL_MODALITIES: tuple[str, ...] = ("image", "video", "audio", "depth", "thermal", "pointcloud")

SPLIT_SEEDS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
SPLIT_SIZES: dict[str, int] = {"train": 10000, "val": 1000, "test": 1000}

# -- geometry ---------------------------------------------------------------------------------
IMAGE_RES = 64
VIDEO_RES = 32
VIDEO_FRAMES = 4
N_POINTS = 256
N_FLOOR_POINTS = 48
N_DISTRACTOR_POINTS = 32
PC_CANDIDATES = 512  # rejection-sampling candidates per object (enough for the thinnest shape)
MAX_OBJECTS = 3

#: object radius in scene units (the scene's half-extent is 1)
RADIUS: dict[str, float] = {"tiny": 0.12, "small": 0.22, "large": 0.34}
EXTENT = 1.16  # the farthest a silhouette reaches from its centre, in radii (star, triangle)
MARGIN = 0.02

# -- appearance -------------------------------------------------------------------------------
RGB: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.12, 0.10),
    "orange": (1.00, 0.55, 0.05),
    "yellow": (0.98, 0.92, 0.12),
    "green": (0.15, 0.78, 0.20),
    "cyan": (0.10, 0.85, 0.95),
    "blue": (0.15, 0.30, 1.00),
    "purple": (0.62, 0.20, 0.90),
    "white": (0.96, 0.96, 0.96),
}
#: thermal intensity of each colour: eight levels 0.3 .. 1.0, 0.1 apart
TEMPERATURE: dict[str, float] = {
    "red": 1.0, "orange": 0.9, "yellow": 0.8, "white": 0.7,
    "purple": 0.6, "green": 0.5, "cyan": 0.4, "blue": 0.3,
}
#: depth (nearness) of an object's rim by size; the centre is up to 0.08 nearer
DEPTH_LEVEL: dict[str, float] = {"tiny": 0.35, "small": 0.55, "large": 0.75}

# -- sound ------------------------------------------------------------------------------------
SAMPLE_RATE = 8000
AUDIO_SAMPLES = 4000  # 0.5 s
#: fundamental of each colour: 200 Hz .. ~1131 Hz, 2.5 octaves in equal steps (~4.3 semitones)
PITCH_HZ: dict[str, float] = {c: float(200.0 * 2.0 ** (i * 2.5 / 7)) for i, c in enumerate(COLORS)}
#: timbre of each shape: (frequency ratio, amplitude) partials; the fundamental is the strongest
TIMBRE: dict[str, tuple[tuple[float, float], ...]] = {
    "circle": ((1.0, 1.0),),  # pure sine
    "square": tuple((float(n), 1.0 / n) for n in (1, 3, 5, 7, 9)),  # odd harmonics (hollow)
    "triangle": ((1.0, 1.0), (2.0, 0.55), (4.0, 0.3), (8.0, 0.15)),  # octave partials (organ-like)
    "star": ((1.0, 1.0),) + tuple((float(n), 0.75) for n in range(2, 11)),  # bright pulse / buzz
    "cross": tuple((float(n), 1.0 / n) for n in range(1, 11)),  # sawtooth (all harmonics)
    "ring": ((1.0, 1.0), (2.76, 0.6), (5.40, 0.4), (8.93, 0.25)),  # inharmonic bell
}
LOUDNESS: dict[str, float] = {"tiny": 0.15, "small": 0.34, "large": 0.5}  # peak amplitude
TONE_SECONDS = (0.28, 0.12)  # main, distractor
ONSET_RANGE = (0.02, 0.20)  # onset time (s) for x = -1 .. +1
AUDIO_NOISE = 0.003

SHAPE_INDEX = {s: i for i, s in enumerate(SHAPES)}
COLOR_INDEX = {c: i for i, c in enumerate(COLORS)}
SIZE_INDEX = {s: i for i, s in enumerate(SIZES)}
COLOR_RGB = np.array([RGB[c] for c in COLORS], dtype=np.float32)
COLOR_TEMPERATURE = np.array([TEMPERATURE[c] for c in COLORS], dtype=np.float32)
SIZE_RADIUS = np.array([RADIUS[s] for s in SIZES], dtype=np.float32)
SIZE_DEPTH = np.array([DEPTH_LEVEL[s] for s in SIZES], dtype=np.float32)
SIZE_LOUDNESS = np.array([LOUDNESS[s] for s in SIZES], dtype=np.float32)
MODALITY_STREAM = {m: k for k, m in enumerate(ALL_MODALITIES)}  # noise sub-stream per modality
