"""Per-modality defaults for certification: two noise levels and reference L2 radii, raw units.

Certified radii are **L2 norms over the whole raw input tensor** in the modality's own unit
(pixel values in [0, 1] for image/video/depth/thermal, full-scale waveform samples for audio,
coordinate/colour units for point clouds). They are much smaller than the L-inf budgets of the
attack grid: an L-inf ball of 1/255 on a 3x64x64 image contains L2 perturbations of norm
``sqrt(12288)/255 = 0.43``.

Sigmas: pixel modalities use 0.12 and 0.25 (12% and 25% of the value range).
Audio uses 0.01 and 0.02 (the SynthScenes signals have RMS ~0.1 of full scale, so SNRs of about
20 dB and 14 dB: beyond that the bare tower is at chance). Point clouds use 0.02 and 0.05 (1% and
2.5% of the scene extent, per coordinate and colour channel).

Reference radii: three fixed values per modality, about 0.4x, 0.8x and 1.7x the smaller sigma
(certificates at n = 256 draws and alpha = 0.001 top out at 1.93 sigma; at n = 512, 2.2 sigma).
The image value 0.1 is the standard reference radius.
"""
from __future__ import annotations

from ...errors import RobustMMError

DEFAULT_SIGMAS: dict[str, tuple[float, float]] = {
    "image": (0.12, 0.25), "video": (0.12, 0.25), "depth": (0.12, 0.25), "thermal": (0.12, 0.25),
    "audio": (0.01, 0.02), "pointcloud": (0.02, 0.05),
}

REFERENCE_RADII: dict[str, tuple[float, ...]] = {
    "image": (0.05, 0.1, 0.2), "video": (0.05, 0.1, 0.2), "depth": (0.05, 0.1, 0.2), "thermal": (0.05, 0.1, 0.2),
    "audio": (0.004, 0.008, 0.016), "pointcloud": (0.008, 0.016, 0.032),
}


def reference_radii(modality: str) -> tuple[float, ...]:
    """The reference L2 radii of ``modality`` (see the module docstring)."""
    if modality not in REFERENCE_RADII:
        raise RobustMMError(f"no reference radii for modality {modality!r}; pass radii= explicitly")
    return REFERENCE_RADII[modality]
