"""PGD's optimised step loop against a plain reference loop, and its freedom from per-step syncs.

``reference_run`` is PGD written the obvious way (every row indexed every step, best iterates by
masked assignment, fresh tensors for each step and projection), as ``robustmm.attacks.pgd`` was
before its hot loop was tightened. The library must return exactly the same tensors, bit for bit,
on several modalities and settings, including batches where early stopping freezes some items.
"""
from __future__ import annotations

import pytest
import torch
from _tiny import tiny_fixtures  # noqa: E402  (tests/ is on sys.path)

from robustmm.attacks.losses import effective_loss, make_objective
from robustmm.attacks.ops import ascent_step, frozen, per_sample, project, random_delta
from robustmm.attacks.pgd import PGD
from robustmm.evaluation import iter_batches
from robustmm.modalities import get_modality

pytestmark = pytest.mark.usefixtures("one_thread")

N = 8
MODS = ("image", "audio", "pointcloud")
SETTINGS = [
    {},
    {"keep_best": False},
    {"early_stop": True},
    {"early_stop": True, "keep_best": False},
    {"norm": "l2", "random_start": False},
    {"loss": "caption", "steps": 2},
    {"targeted": True, "early_stop": True},
]


data, enc = tiny_fixtures(N)


def reference_run(atk: PGD, encoder, batch) -> dict:
    """PGD's documented algorithm, written plainly (index bookkeeping everywhere)."""
    spec = get_modality(batch.modality)
    eps, norm, step = atk.budget(batch.modality)
    x, n = batch.x.detach(), len(batch)
    gen = torch.Generator().manual_seed(atk.seed)
    name = effective_loss(atk.loss, atk.targeted, batch)
    with frozen(encoder), torch.enable_grad():
        objective = make_objective(name, encoder, batch, x=x, target=atk.target, scale=atk.logit_scale, generator=gen)
        x_adv = x.clone()
        if atk.random_start:
            delta = random_delta(x, eps, norm, gen, seed=atk.seed, index=torch.as_tensor(batch.index))
            x_adv = project(x + delta, x, eps, norm, spec.domain)
        active, stopped = torch.arange(n), torch.zeros(n, dtype=torch.bool)
        first, last = torch.full((n,), float("nan")), torch.full((n,), float("nan"))
        best_x, best_loss = x_adv.clone(), torch.full((n,), float("-inf"))
        forwards = 0
        for t in range(atk.steps):
            xa = x_adv[active].detach().requires_grad_(True)
            emb = encoder.encode(batch.modality, xa, validate=False)
            loss = objective(emb, active)
            forwards += len(active)
            (grad,) = torch.autograd.grad(loss.sum(), xa)
            with torch.no_grad():
                loss, xa = loss.detach(), xa.detach()
                if t == 0:
                    first[active] = loss
                last[active] = loss
                better = loss > best_loss[active]
                best_loss[active[better]] = loss[better]
                best_x[active[better]] = xa[better]
                new = project(xa + ascent_step(grad.clone(), norm, step), x[active], eps, norm, spec.domain)
                done = objective.success(emb, active) if atk.early_stop else torch.zeros(len(active), dtype=torch.bool)
                new[done] = xa[done]
                stopped[active[done]] = True
                x_adv[active] = new
                active = active[~done]
            if len(active) == 0:
                break
        if atk.keep_best and atk.steps and len(active):
            with torch.no_grad():
                loss = objective(encoder.encode(batch.modality, x_adv[active], validate=False), active)
            forwards += len(active)
            last[active] = loss
            better = loss > best_loss[active]
            best_loss[active[better]] = loss[better]
            best_x[active[better]] = x_adv[active][better]
            x_adv = torch.where(per_sample(stopped, x_adv), x_adv, best_x)
    return {"x": x_adv, "first": first, "last": last, "stopped": stopped, "forwards": forwards,
            "best": torch.where(stopped, last, best_loss) if atk.keep_best else None}


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.dtype == b.dtype and torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))  # NaN: rows never evaluated


@pytest.mark.parametrize("modality", MODS)
def test_bit_identical_to_the_plain_loop(enc, data, modality):
    batch = next(iter_batches(data, modality, N, data.tasks[modality].prompts()))
    partial = False
    for kw in map(dict, SETTINGS):
        atk = PGD(eps=get_modality(modality).eps_grid[-1], steps=kw.pop("steps", 4), **kw)
        out, ref = atk.run(enc, batch), reference_run(atk, enc, batch)
        assert torch.equal(out.batch.x, ref["x"]), kw
        assert _same(out.loss_first, ref["first"]) and _same(out.loss_last, ref["last"]), kw
        assert _same(out.loss_best, ref["best"]), kw
        assert torch.equal(out.stopped, ref["stopped"]) and out.forwards == ref["forwards"], kw
        partial |= bool(0 < int(out.stopped.sum()) < N)
    assert partial, "no setting stopped only some items: the partial-batch path went untested"


@pytest.mark.parametrize("kw", [{}, {"norm": "l2"}, {"keep_best": False}])
def test_no_host_sync_per_step(enc, data, monkeypatch, kw):
    """Without early stopping, more steps add no tensor-to-Python conversions (device syncs)."""
    batch = next(iter_batches(data, "image", N, data.tasks["image"].prompts()))
    calls = {"n": 0}
    for name in ("__bool__", "__float__", "__int__", "item", "tolist"):
        orig = getattr(torch.Tensor, name)

        def counting(self, *a, _orig=orig, **k):
            calls["n"] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counting)
    counts = []
    for steps in (1, 5):
        calls["n"] = 0
        PGD(steps=steps, **kw).run(enc, batch)
        counts.append(calls["n"])
    assert counts[0] == counts[1], f"host syncs per call: {counts} for 1 and 5 steps"
