"""``[certification]``: randomized-smoothing certificates (Cohen et al., ICML 2019) on every modality,
for the bare encoder and behind a noise-calibrated head, with SmoothAdv's empirical accuracy beside.

Per modality and sigma two cells: ``MODEL|MODALITY|certification:sigma=S`` (the bare encoder) and
``MODEL|MODALITY|certification:noise-head:sigma=S`` (a ``ce`` head trained on embeddings of
Gaussian-noised training items, :func:`~robustmm.defenses.noise_calibrate`, kept under
``DIR/heads``). The radii are those of :func:`job_radii`: every one within reach of the section's
``draws`` at ``alpha``, the largest certifiable radius included. Each record
(``threat="certified"``) holds the sigma, n0, n and alpha in its
``defense`` block and the certified top-1 and X->text R@1 at radius 0 and the modality's
reference radii in ``metrics.certified``; ``metrics.empirical`` holds SmoothAdv's accuracy at the
same radii on the first ``smoothadv_n`` items. A modality without a zero-shot task is skipped.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

from ...errors import RobustMMError
from ...modalities import get_modality
from ...records import Result
from ..context import JobContext
from ..registry import Cell, CellKind, register_cell
from ..sections import RUN_ITEMS, ConfigError, ItemsOf, Section, option
from ._shared import section_modalities

log = logging.getLogger(__name__)
NOISE_TRAIN = ItemsOf(split="train")  # the noise head trains on the dataset's train split


@dataclasses.dataclass
class CertificationConfig(Section):
    """``[certification]``: noise levels, Monte Carlo sizes, the noise head and the SmoothAdv check."""

    enabled: bool = True
    modalities: list[str] = option([], check=get_modality, in_run="modalities")  # empty = every modality of [run]
    sigmas: dict[str, Any] = option({})  # per modality, e.g. { image = [0.12, 0.25] }; left out = its smaller default
    n: int = option(24, positive=True, items=RUN_ITEMS)  # items certified (at most [run] attack_n)
    quick_n: int | None = option(8, positive=True, items=RUN_ITEMS)
    n0: int = option(16, positive=True)  # selection draws
    quick_n0: int | None = option(8, positive=True)
    draws: int = option(64, positive=True)  # estimation draws (Cohen et al.'s n)
    quick_draws: int | None = option(32, positive=True)
    alpha: float = option(0.001, positive=True)  # failure probability of each certificate
    noise_head: bool = True  # also certify behind a head trained on noisy embeddings
    train_n: int = option(300, positive=True, items=NOISE_TRAIN)  # training items of the noise head
    quick_train_n: int | None = option(64, positive=True, items=NOISE_TRAIN)
    noise_draws: int = option(4, positive=True)  # noisy copies per training item
    quick_noise_draws: int | None = option(2, positive=True)
    epochs: int = option(60, positive=True)
    quick_epochs: int | None = option(20, positive=True)
    smoothadv_n: int = option(8, minimum=0, items=RUN_ITEMS)  # items attacked by SmoothAdv (0 = no empirical check)
    quick_smoothadv_n: int | None = option(4, minimum=0, items=RUN_ITEMS)
    smoothadv_steps: int = option(5, positive=True)
    quick_smoothadv_steps: int | None = option(2, positive=True)
    smoothadv_m: int = option(4, positive=True)  # noise draws per SmoothAdv step
    quick_smoothadv_m: int | None = option(2, positive=True)


def _check_sigmas(cfg: CertificationConfig, source: str) -> None:
    from ...encoders.smoothing_stats import check_smoothing_args

    for modality, values in cfg.sigmas.items():
        where = f"{source}: [certification] sigmas.{modality}"
        get_modality(modality)
        values = values if isinstance(values, list) else [values]
        if not values:
            raise ConfigError(f"{where}: expected at least one sigma")
        for v in values:
            try:
                check_smoothing_args(sigma=v)
            except RobustMMError as e:
                raise ConfigError(f"{where}: {e}") from None
    if not 0 < cfg.alpha < 1:
        raise ConfigError(f"{source}: [certification] alpha: must lie strictly between 0 and 1, got {cfg.alpha}")


def sigmas_for(section: CertificationConfig, modality: str) -> list[float]:
    """The sigmas ``modality`` is certified at (the section's, else its smaller default sigma)."""
    from ...evaluation.certification import DEFAULT_SIGMAS

    given = section.sigmas.get(modality)
    if given is None:
        return [DEFAULT_SIGMAS[modality][0]] if modality in DEFAULT_SIGMAS else []
    return [float(v) for v in (given if isinstance(given, list) else [given])]


@register_cell("certification", order=67)
class CertificationCells(CellKind):
    """Certified accuracy against radius (randomized smoothing), bare and noise-head, with SmoothAdv beside."""

    Config = CertificationConfig

    @classmethod
    def parse(cls, table: Any, source: str) -> CertificationConfig:
        cfg = CertificationConfig.from_table(table, cls.name, source)
        _check_sigmas(cfg, source)  # type: ignore[arg-type]
        return cfg  # type: ignore[return-value]

    def cells(self, ctx: JobContext, section: Any) -> list[Cell]:
        out = []
        for m in section_modalities(ctx, section.modalities):
            for s in sigmas_for(section, m):
                out.append(Cell(ctx.key(m, f"certification:sigma={s:g}"), lambda m=m, s=s: run_certification(ctx, m, s, False)))
                if section.noise_head:
                    out.append(Cell(ctx.key(m, f"certification:noise-head:sigma={s:g}"),
                                    lambda m=m, s=s: run_certification(ctx, m, s, True)))
        return out


def _noise_head(ctx: JobContext, modality: str, sigma: float) -> Any:
    """A ``ce`` head trained on noisy embeddings at ``sigma`` (reused from ``DIR/heads`` when there)."""
    from ...defenses.noise_heads import noise_calibrate

    name = f"noise-sigma{sigma:g}"
    path = ctx.heads_path(modality, name) if ctx.out_dir is not None else None
    if path is not None and path.exists():
        from ...encoders.heads import load_heads

        return load_heads(path, ctx.encoder())
    pick = lambda key: int(ctx.pick("certification", key))  # noqa: E731
    train = ctx.dataset(NOISE_TRAIN.split, pick("train_n"))
    cal = noise_calibrate(ctx.encoder(), train, modality=modality, sigma=sigma, draws=pick("noise_draws"),
                          epochs=pick("epochs"), seed=ctx.seed, progress=ctx.progress)
    if path is not None:
        cal.save(str(path))
    return cal


def run_certification(ctx: JobContext, modality: str, sigma: float, noise_head: bool) -> list[Result]:
    """Certify ``modality`` at ``sigma``: the bare encoder, or behind a noise-calibrated head."""
    from ...evaluation.certification import certify_dataset

    data = ctx.dataset(n=min(int(ctx.pick("certification", "n")), ctx.attack_n))
    if modality not in data.tasks:
        log.warning("certification: %s has no zero-shot task for %s; skipped", data.name, modality)
        return []
    pick = lambda key: int(ctx.pick("certification", key))  # noqa: E731
    alpha = float(ctx.section("certification").alpha)
    smoothadv = None
    if pick("smoothadv_n") > 0:
        smoothadv = {"steps": pick("smoothadv_steps"), "m": pick("smoothadv_m"), "n": pick("draws"), "alpha": alpha,
                     "n_items": min(pick("smoothadv_n"), len(data))}
    heads = _noise_head(ctx, modality, sigma) if noise_head else None
    return [certify_dataset(ctx.encoder(), data, modality=modality, sigma=sigma, n0=pick("n0"), n=pick("draws"),
                            alpha=alpha, heads=heads, radii=job_radii(modality, sigma, pick("draws"), alpha),
                            batch_size=ctx.batch_size, seed=ctx.seed, smoothadv=smoothadv, progress=ctx.progress)]


def job_radii(modality: str, sigma: float, draws: int, alpha: float) -> list[float]:
    """The radii the job reports: the modality's reference radii that ``draws`` estimation draws at
    ``alpha`` can certify, and that largest certifiable radius itself (rounded down to three
    significant digits), so no reported radius is out of the budget's reach."""
    import math

    from ...evaluation.certification import max_certified_radius, reachable_radii, reference_radii

    top = max_certified_radius(sigma, draws, alpha)
    kept = reachable_radii(reference_radii(modality), top)
    dropped = sorted(set(reference_radii(modality)) - set(kept))
    if dropped:
        log.info("certification %s sigma=%g: radii %s are beyond the %d draws' reach (%.4g); not reported",
                 modality, sigma, ", ".join(f"{r:g}" for r in dropped), draws, top)
    if top <= 0:
        return kept
    digits = 2 - math.floor(math.log10(top))
    return sorted({*kept, math.floor(top * 10 ** digits) / 10 ** digits})
