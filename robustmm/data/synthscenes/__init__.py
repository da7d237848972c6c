"""SynthScenes: a seeded procedural multimodal dataset (the embedded default's data).

A scene holds 1-3 objects, each with a shape, a colour, a size and a position in the square
[-1, 1] x [-1, 1] (x to the right, y up). Object 0 is the *main* object: it is "small" or
"large" and drawn on top, while the distractors are "tiny", so the main object is always the
most salient thing in every modality. One scene is rendered into six aligned modalities, all
float32 tensors in the raw domain of :mod:`robustmm.modalities`:

========== ================ ===================================================================
modality   shape            content
========== ================ ===================================================================
image      (3, 64, 64)      coloured silhouettes over a dark, textured, noisy background
video      (4, 3, 32, 32)   the same objects moving along seeded straight lines
audio      (4000,)          8 kHz, 0.5 s sonification: pitch <- colour, timbre <- shape,
                            loudness <- size, onset time <- x position
depth      (1, 64, 64)      0 = far background; raised silhouettes, nearer when larger
                            (carries no colour information)
thermal    (1, 64, 64)      silhouettes at a per-colour temperature over a cool background
pointcloud (256, 6)         x, y, z, r, g, b points on the objects plus floor points
========== ================ ===================================================================

Each scene also has five paraphrased captions (the main object is always named first, with its
size, colour and shape) and ground-truth attributes. Zero-shot tasks score every modality on
what its content can tell: colour + shape of the main object (48 classes) everywhere except
depth, which cannot see colour and is scored on size + shape (12 classes).

Reproducibility: scene ``i`` of seed ``s`` is drawn from its own generator
``numpy.random.default_rng([s, i])`` and rendered with noise streams derived from a per-scene
``noise_seed``, and rendering uses only element-wise arithmetic (no batch-size dependent
reductions or transcendental functions on batched data), so the same seed gives bit-identical
tensors and any prefix of a larger split equals the smaller split.

The package: :mod:`.vocab` (vocabulary and per-attribute appearance), :mod:`.scenes` and
:mod:`.captions` (the seeded sampler), :mod:`.shapes` and :mod:`.raster` (signed distance
functions, silhouettes), one ``render_*`` module per kind of modality, :mod:`.render` (the
chunked renderer), :mod:`.tasks` (zero-shot tasks) and :mod:`.dataset` (the registered loader).
"""
from .dataset import load_synthscenes, synthscenes
from .render import RENDER_CHUNK as RENDER_CHUNK  # the chunk size (tests cross its boundary)
from .render import render
from .scenes import generate_scenes, scene_attributes
from .tasks import COLOR_SHAPE_CLASSES, SIZE_SHAPE_CLASSES, TEMPLATES, zeroshot_tasks
from .vocab import (
    ALL_MODALITIES,
    AUDIO_SAMPLES,
    COLORS,
    DEPTH_LEVEL,
    GENERATOR_VERSION,
    IMAGE_RES,
    LOUDNESS,
    MAIN_SIZES,
    N_DISTRACTOR_POINTS,
    N_FLOOR_POINTS,
    N_POINTS,
    PITCH_HZ,
    RADIUS,
    RGB,
    SAMPLE_RATE,
    SHAPES,
    SIZES,
    SPLIT_SEEDS,
    SPLIT_SIZES,
    TEMPERATURE,
    TIMBRE,
    VIDEO_FRAMES,
    VIDEO_RES,
)

__all__ = [
    # vocabulary and splits
    "SHAPES", "COLORS", "SIZES", "MAIN_SIZES", "ALL_MODALITIES", "SPLIT_SEEDS", "SPLIT_SIZES", "GENERATOR_VERSION",
    # how each attribute is rendered
    "RADIUS", "RGB", "TEMPERATURE", "DEPTH_LEVEL", "PITCH_HZ", "TIMBRE", "LOUDNESS", "SAMPLE_RATE", "AUDIO_SAMPLES",
    "IMAGE_RES", "VIDEO_RES", "VIDEO_FRAMES", "N_POINTS", "N_FLOOR_POINTS", "N_DISTRACTOR_POINTS",
    # zero-shot tasks
    "COLOR_SHAPE_CLASSES", "SIZE_SHAPE_CLASSES", "TEMPLATES",
    # functions
    "generate_scenes", "render", "scene_attributes", "zeroshot_tasks", "synthscenes", "load_synthscenes",
]
