"""Universal adversarial patch (AdvCLIP, ACM MM 2023): one square patch that fools every image.

The patch is learned once on a training split by direct optimisation of its pixels (Adam on
unconstrained logits, ``patch = sigmoid(logits)`` so every value stays in [0, 1]) -- the simple
baseline of AdvCLIP, which trains a GAN generator instead. The objective, maximised over the
patch, is

    adv_weight * [InfoNCE(patched -> clean) + InfoNCE(patched -> captions)]
    + topology_weight * KL(P_clean || P_patched)

* InfoNCE (temperature 0.1): the patched embedding of item i has as positive its own clean
  embedding (resp. the mean embedding of its captions), the other items of the batch as
  negatives; maximising the loss minimises the positive's probability.
* topology deviation: ``P[i, j]`` = softmax over j != i of ``sim(e_i, e_j) / temperature``, the
  neighbourhood distribution of item i within the batch, for clean and for patched embeddings;
  their KL divergence is maximised so the patched batch loses its neighbourhood structure.

Image-like modalities only: image, depth, thermal (N, C, H, W) and video (N, T, C, H, W, the same
patch pasted on every frame). The patch is not bounded by an eps-ball: it replaces a square of
``area`` times the image's pixels at ``position``.

Example::

    train = robustmm.load_dataset("synthscenes", split="train", n=1000, modalities="image")
    test = robustmm.load_dataset("synthscenes", split="test", n=500, modalities="image")
    patch = build_attack("patch", epochs=5).fit(enc, train)
    res = robustmm.evaluate(enc, test, modality="image", attack=patch)
    patch.fooling_rate(enc, test)          # fraction of zero-shot predictions changed
    patch.save("out/patch")                # out/patch.safetensors + out/patch.json
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from ..batch import Batch
from ..errors import BudgetError, CheckpointError, InputShapeError, RobustMMError, UnknownNameError
from ..modalities import MODALITIES, get_modality
from ..persist import load_weights, save_weights
from .base import Attack, register_attack
from .ops import frozen
from .patch_parts import caption_set_embeddings, check_position, fooling_rate, paste_patch, patch_objective

log = logging.getLogger(__name__)

__all__ = ["UniversalPatch", "IMAGE_LIKE", "fooling_rate", "patch_objective", "paste_patch"]

#: modalities whose samples end in (channels, height, width) (``ModalitySpec.image_like``)
IMAGE_LIKE: tuple[str, ...] = tuple(name for name, spec in MODALITIES.items() if spec.image_like)


@register_attack("patch")
class UniversalPatch(Attack):
    """Universal adversarial patch (AdvCLIP): one square patch, fitted once, fools every input.

    Args:
        modality: the image-like modality it is fitted on and pasted into: "image", "depth",
            "thermal" or "video" (the same patch on every frame).
        area: patch area as a fraction of the image (square; 0.03 = AdvCLIP's 38x38 on 224x224).
        position: "bottom-right" (AdvCLIP's default), "bottom-left", "top-right", "top-left",
            "center", a ``(row, col)`` top-left corner (ints: pixels; floats in [0, 1]: fractions
            of the free range), or "random" (a new random place for every item at every fit step;
            at attack time seeded by ``seed`` and the batch's first index, so reproducible).
        margin: distance of a corner placement from the image border, as a fraction of the
            shorter side (default 1/16: AdvCLIP's 14 px on 224).
        epochs: passes of Adam over the training split (the patch logits).
        batch_size: training items per Adam step.
        lr: Adam's learning rate.
        temperature: InfoNCE / neighbourhood temperature (AdvCLIP: 0.1).
        adv_weight: weight of the two InfoNCE terms (AdvCLIP: 10).
        topology_weight: weight of the topology-deviation term (AdvCLIP: 1).
        seed: initial patch, batch order and random placements.

    ``__call__(encoder, batch)`` pastes the fitted patch (the encoder is not used: the patch is
    universal, so transfer evaluation pastes the patch fitted on whatever model ``fit`` saw).
    Shapes: ``batch.x`` (N, C, H, W) or (N, T, C, H, W) with the (H, W) the patch was fitted at
    (the module docstring has an example).
    """

    needs_fit = True  # learned: a job's [attacks.patch] cell fits it on ``fit_n`` items of ``fit_split``
    fit_split = "train"  # fitted on a training split, scored on held-out items (the CLI honours this)

    def __init__(
        self,
        modality: str = "image",
        area: float = 0.03,
        position: str | tuple[int | float, int | float] = "bottom-right",
        *,
        margin: float = 1 / 16,
        epochs: int = 5,
        batch_size: int = 32,
        lr: float = 0.05,
        temperature: float = 0.1,
        topology_weight: float = 1.0,
        adv_weight: float = 10.0,
        seed: int = 0,
    ):
        if not get_modality(modality).image_like:
            raise UnknownNameError("image-like modality for the patch attack", modality, IMAGE_LIKE)
        self.position = check_position(position)
        if not 0.0 < area < 1.0:
            raise BudgetError(f"patch area must be a fraction in (0, 1), got {area}")
        if not 0.0 <= margin < 0.5:
            raise BudgetError(f"patch margin must be a fraction in [0, 0.5), got {margin}")
        if epochs < 1 or batch_size < 1 or lr <= 0 or temperature <= 0:
            raise BudgetError("patch: epochs and batch_size must be >= 1, lr and temperature > 0")
        self.modality, self.area, self.margin, self.seed = modality, float(area), float(margin), int(seed)
        self.epochs, self.batch_size, self.lr = int(epochs), int(batch_size), float(lr)
        self.temperature, self.topology_weight, self.adv_weight = float(temperature), float(topology_weight), float(adv_weight)
        self.patch: torch.Tensor | None = None  # (C, s, s) in [0, 1] once fitted
        self.image_size: tuple[int, int] | None = None
        self.fit_info: dict[str, Any] = {}

    # -- geometry --------------------------------------------------------------------------
    def side(self, height: int, width: int) -> int:
        """Patch side in pixels for an image of this size: round(sqrt(area * H * W))."""
        return max(1, min(height, width, round(math.sqrt(self.area * height * width))))

    def margin_px(self, height: int, width: int) -> int:
        return round(self.margin * min(height, width))

    def corners(self, n: int, height: int, width: int, generator: torch.Generator | None = None) -> tuple[list[int], list[int]]:
        """Top-left (rows, cols) of the patch for ``n`` items of size (height, width)."""
        s = self.side(height, width)
        free_r, free_c = height - s, width - s
        pos = self.position
        if pos == "random":
            g = generator if generator is not None else torch.Generator().manual_seed(self.seed)
            rows = torch.randint(0, free_r + 1, (n,), generator=g).tolist()
            cols = torch.randint(0, free_c + 1, (n,), generator=g).tolist()
            return rows, cols
        if isinstance(pos, str):
            m = self.margin_px(height, width)
            r = {"top": m, "bottom": free_r - m}.get(pos.split("-")[0], free_r // 2)
            c = {"left": m, "right": free_c - m}.get(pos.split("-")[-1], free_c // 2)
            r, c = min(max(r, 0), free_r), min(max(c, 0), free_c)
        else:
            r, c = (int(round(p * f)) if isinstance(p, float) and p <= 1.0 else int(p) for p, f in zip(pos, (free_r, free_c)))
            if r > free_r or c > free_c:
                raise InputShapeError(f"patch at (row {r}, col {c}) with side {s} does not fit a {height}x{width} image")
        return [r] * n, [c] * n

    def resolve(self, modality: str) -> "UniversalPatch":
        """This patch when it is made for ``modality``; a one-line error otherwise (a patch is
        fitted on and pasted into the one modality it was built for)."""
        if modality != self.modality:
            raise UnknownNameError(f"modality of this patch (built for {self.modality!r})", modality, (self.modality,))
        return self

    def _check_input(self, modality: str, x: torch.Tensor, fitted: bool) -> tuple[int, int, int]:
        spec = get_modality(self.resolve(modality).modality)
        if x.dim() != len(spec.shape) + 1:
            raise InputShapeError(f"patch: expected {modality} input with {len(spec.shape) + 1} dims, got {tuple(x.shape)}")
        c, h, w = x.shape[-3:]
        if fitted and self.image_size is not None and (h, w) != tuple(self.image_size):
            raise InputShapeError(f"patch was fitted on {self.image_size[0]}x{self.image_size[1]} inputs, got {h}x{w}")
        if fitted and self.patch is not None and self.patch.shape[0] != c:
            raise InputShapeError(f"patch has {self.patch.shape[0]} channels, input has {c}")
        return c, h, w

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, encoder: Any, dataset: Any) -> "UniversalPatch":
        """Learn the patch on ``dataset`` (a training split with captions) against ``encoder``.

        The encoder is put in eval mode for the duration (its modes are restored) and its
        weights are never updated (gradients go to the patch only).
        """
        dataset.check_modality(self.modality)
        encoder.check_modality(self.modality)
        dataset.check_nonempty()
        n = len(dataset)
        c, h, w = self._check_input(self.modality, dataset.get(self.modality, torch.arange(1)), fitted=False)
        s = self.side(h, w)
        device = encoder.device
        g = torch.Generator().manual_seed(self.seed)
        init = torch.rand(c, s, s, generator=g).clamp(0.02, 0.98)
        logits = torch.logit(init).to(device).requires_grad_(True)
        opt = torch.optim.Adam([logits], lr=self.lr)
        bs = min(self.batch_size, n)
        steps_per_epoch = max(1, n // bs)  # drop the ragged tail: InfoNCE wants full batches
        history: list[dict[str, float]] = []
        t0 = time.perf_counter()
        with frozen(encoder):
            for epoch in range(self.epochs):
                perm = torch.randperm(n, generator=g)
                sums = {"objective": 0.0, "nce_clean": 0.0, "nce_text": 0.0, "topology": 0.0}
                for step in range(steps_per_epoch):
                    idx = perm[step * bs : (step + 1) * bs]
                    x = dataset.get(self.modality, idx).to(device)
                    captions = [list(dataset.captions[i]) for i in idx.tolist()]
                    with torch.no_grad():
                        clean = encoder.encode(self.modality, x)
                        text = caption_set_embeddings(encoder, captions, device)
                    rows, cols = self.corners(len(idx), h, w, g)
                    adv = encoder.encode(self.modality, paste_patch(x, torch.sigmoid(logits), rows, cols), validate=False)
                    objective, parts = patch_objective(
                        adv, clean, text, temperature=self.temperature,
                        adv_weight=self.adv_weight, topology_weight=self.topology_weight,
                    )
                    (grad,) = torch.autograd.grad(-objective, [logits])
                    opt.zero_grad(set_to_none=True)
                    logits.grad = grad
                    opt.step()
                    sums["objective"] += objective.item()
                    for k, v in parts.items():
                        sums[k] += v
                means = {k: v / steps_per_epoch for k, v in sums.items()}
                history.append(means)
                log.info("patch epoch %d/%d: objective %.4f (nce clean %.3f, text %.3f, topology %.4f)",
                         epoch + 1, self.epochs, means["objective"], means["nce_clean"], means["nce_text"], means["topology"])
        self.patch = torch.sigmoid(logits.detach()).cpu()
        self.image_size = (int(h), int(w))
        self.fit_info = {
            "encoder": getattr(encoder, "name", "?"), "dataset": dataset.info() if hasattr(dataset, "info") else {},
            "n_train": n, "steps": steps_per_epoch * self.epochs, "final_objective": history[-1]["objective"],
            "history": history, "fit_s": round(time.perf_counter() - t0, 3),
        }
        return self

    # -- attacking -------------------------------------------------------------------------
    def __call__(self, encoder: Any, batch: Batch) -> Batch:
        """Paste the fitted patch into every item of ``batch`` (a new batch; the input is untouched)."""
        if self.patch is None:
            raise RobustMMError(
                "UniversalPatch has no patch yet: call fit(encoder, train_dataset) or UniversalPatch.load(path) first"
            )
        _, h, w = self._check_input(batch.modality, batch.x, fitted=True)
        g = None
        if self.position == "random":
            offset = int(batch.index[0]) if batch.index is not None and len(batch.index) else 0
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + offset) % 2**64)  # any seed
        rows, cols = self.corners(len(batch), h, w, g)
        with torch.no_grad():
            x = paste_patch(batch.x, self.patch, rows, cols)
        return batch.replace(x=x)

    def fooling_rate(self, encoder: Any, dataset: Any, modality: str | None = None, batch_size: int = 128) -> float:
        """Fraction of ``dataset`` items (held out from fitting) whose zero-shot top-1 prediction changes."""
        return fooling_rate(encoder, dataset, self, modality or self.modality, batch_size)

    def describe(self) -> dict[str, Any]:
        h, w = self.image_size if self.image_size is not None else (None, None)
        return {
            "name": self.name, "eps": None,  # a patch replaces pixels; its budget is its area
            "modality": self.modality, "area": self.area, "size_px": None if h is None else self.side(h, w),
            "image_size": None if h is None else [h, w],
            "position": self.position if isinstance(self.position, str) else list(self.position),
            "margin_px": None if h is None else self.margin_px(h, w),
            "epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "temperature": self.temperature,
            "topology_weight": self.topology_weight, "adv_weight": self.adv_weight,
            "optimizer": "adam on sigmoid-parametrised pixels", "seed": self.seed,
            "fitted_on": {k: self.fit_info[k] for k in ("encoder", "dataset", "n_train", "steps", "final_objective")
                          if k in self.fit_info} or None,
        }

    def settings(self) -> dict[str, Any]:
        return {
            "modality": self.modality, "area": self.area, "position": self.position, "margin": self.margin,
            "epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "temperature": self.temperature,
            "topology_weight": self.topology_weight, "adv_weight": self.adv_weight, "seed": self.seed,
        }

    # -- persistence -----------------------------------------------------------------------
    def save(self, stem: str | Path) -> None:
        """Write ``stem.safetensors`` (the patch, (C, s, s) float32) and ``stem.json`` (settings, fit info)."""
        if self.patch is None:
            raise RobustMMError("UniversalPatch.save: nothing to save, the patch is not fitted")
        config = self.settings() | {"position": self.position if isinstance(self.position, str) else list(self.position)}
        doc = {"schema": "robustmm.patch/1", "attack": "patch", "config": config,
               "image_size": list(self.image_size or ()), "fit": self.fit_info}
        Path(stem).parent.mkdir(parents=True, exist_ok=True)
        save_weights(_stem(stem), {"patch": self.patch.float()}, doc)

    @classmethod
    def load(cls, stem: str | Path) -> "UniversalPatch":
        """Load a patch written by :meth:`save` (validated: shape, channels, values in [0, 1])."""
        tensors, doc = load_weights(_stem(stem), "patch")
        cpath, wpath = _stem(stem).with_suffix(".json"), _stem(stem).with_suffix(".safetensors")
        try:
            config = dict(doc["config"])
            if isinstance(config.get("position"), list):
                config["position"] = tuple(config["position"])
            attack = cls(**config)
            image_size = tuple(int(v) for v in doc["image_size"])
            patch = tensors["patch"].float()
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{cpath}: not a robustmm patch ({type(e).__name__}: {e})") from None
        s = attack.side(*image_size)
        if patch.dim() != 3 or patch.shape[1:] != (s, s):
            raise CheckpointError(f"{wpath}: patch shape {tuple(patch.shape)} does not match area {attack.area} on {image_size}")
        if not torch.isfinite(patch).all() or patch.min() < 0 or patch.max() > 1:
            raise CheckpointError(f"{wpath}: patch values outside [0, 1]")
        attack.patch, attack.image_size, attack.fit_info = patch, image_size, dict(doc.get("fit", {}))  # type: ignore[assignment]
        return attack


def _stem(stem: str | Path) -> Path:
    """``stem`` without a ``.safetensors`` / ``.json`` suffix."""
    stem = Path(stem)
    return stem.with_suffix("") if stem.suffix in (".safetensors", ".json") else stem
