"""Nested-ball robustness curves vs the naive sweep, on a tiny random-init TinyBind.

The zero-shot labels of the test items are replaced by the random model's own clean predictions,
so every item starts correct and the grid (a fraction of each modality's smallest budget) breaks
them gradually -- the situation a trained model is in.
"""
from __future__ import annotations

import json

import pytest
import torch
from _tiny import tiny_tinybind  # noqa: E402  (tests/ is on sys.path)

from robustmm.attacks.base import Attack
from robustmm.attacks.pgd import PGD
from robustmm.batch import Batch
from robustmm.data.base import ZeroShotTask
from robustmm.data.synthscenes import synthscenes
from robustmm.errors import BudgetError, RobustMMError
from robustmm.evaluation import naive_curve, robustness_curve
from robustmm.modalities import get_modality

pytestmark = pytest.mark.usefixtures("one_thread")

N = 16
MODS = ("image", "audio", "thermal")
FRACTIONS = (0.05, 0.1, 0.2, 0.4, 1.0)


@pytest.fixture(scope="module")
def setup(one_thread):
    data = synthscenes(N, seed=2, modalities=MODS)
    enc = tiny_tinybind(data)
    for m in MODS:  # every item correct on clean inputs
        task = data.tasks[m]
        with torch.no_grad():
            logits = enc.encode(m, data.get(m, slice(None))) @ enc.class_embeddings(task.prompts()).T
        data.tasks[m] = ZeroShotTask(logits.argmax(1), task.classnames, task.templates, task.description)
    return enc, data


def grid(modality: str) -> list[float]:
    e = get_modality(modality).eps_grid[0]
    return [e * f for f in FRACTIONS]


class Recorder(Attack):
    """Wraps an attack and records which items it was asked to attack at each eps."""

    name = "recorder"

    def __init__(self, inner: PGD, log: dict[float, list[int]] | None = None):
        self.inner, self.log, self.eps = inner, {} if log is None else log, inner.eps

    def with_eps(self, eps: float) -> "Recorder":
        return Recorder(self.inner.with_eps(eps), self.log)

    def describe(self) -> dict:
        return self.inner.describe()

    def __call__(self, encoder, batch: Batch) -> Batch:
        self.log.setdefault(self.eps, []).extend(batch.index.tolist())
        return self.inner(encoder, batch)


@pytest.mark.parametrize("modality", MODS)
def test_nested_curve_properties(setup, modality):
    enc, data = setup
    log: dict[float, list[int]] = {}
    curve = robustness_curve(enc, data, modality=modality, attack=Recorder(PGD(steps=3), log),
                             eps_grid=grid(modality), progress=False, batch_size=6)
    assert [r.attack["eps"] for r in curve] == pytest.approx(grid(modality))
    acc = [r.attacked("zeroshot_top1") for r in curve]
    assert acc == sorted(acc, reverse=True)  # non-increasing
    assert acc[0] <= curve[0].clean("zeroshot_top1") == 1.0
    assert acc[-1] < 1.0  # the grid does break something
    # nested balls: the first eps attacks every (clean-correct) item; each later eps attacks exactly
    # as many items as were still robust, all of them attacked before -- broken items stay broken
    assert sorted(log[curve[0].attack["eps"]]) == list(range(N))
    for r in curve:
        attacked = log.get(r.attack["eps"], [])
        assert len(attacked) == len(set(attacked)) == r.extra["n_attacked"]
        assert r.extra["n_robust"] == round(r.attacked("zeroshot_top1") * N)
    ns = [r.extra["n_robust"] for r in curve]
    assert ns == sorted(ns, reverse=True)
    for prev, nxt in zip(curve, curve[1:]):
        assert set(log.get(nxt.attack["eps"], [])) <= set(log.get(prev.attack["eps"], []))
        assert nxt.extra["n_attacked"] == prev.extra["n_robust"]
    assert sum(r.extra["n_attacked"] for r in curve) < len(curve) * N  # fewer than the naive sweep


@pytest.mark.parametrize("modality", MODS)
def test_nested_matches_naive(setup, modality):
    enc, data = setup
    atk = PGD(steps=3)
    nested = robustness_curve(enc, data, modality=modality, attack=atk, eps_grid=grid(modality), progress=False)
    naive = naive_curve(enc, data, modality=modality, attack=atk, eps_grid=grid(modality), progress=False)
    a = [r.attacked("zeroshot_top1") for r in nested]
    b = [r.attacked("zeroshot_top1") for r in naive]
    # per-item random starts make the nested curve the running intersection of naive robust sets
    assert all(x <= y + 1e-9 for x, y in zip(a, b))
    assert max(abs(x - y) for x, y in zip(a, b)) <= 2 / N
    assert sum(r.extra["n_attacked"] for r in nested) < sum(r.extra["n_attacked"] for r in naive)
    assert all(r.attack["nested"] is True for r in nested) and all(r.attack["nested"] is False for r in naive)
    assert nested[0].clean("zeroshot_top1") == naive[0].clean("zeroshot_top1")


def test_result_schema_and_defaults(setup):
    enc, data = setup
    curve = robustness_curve(enc, data, modality="audio", attack=PGD(steps=1), n=6, progress=False)
    spec = get_modality("audio")
    assert [r.attack["eps"] for r in curve] == list(spec.eps_grid)
    for r in curve:
        d = json.loads(r.to_json())
        assert d["schema"] == "robustmm.result/1" and d["modality"] == "audio" and d["n"] == 6
        assert d["threat"] == "white-box" and d["attack"]["name"] == "pgd" and d["attack"]["norm"] == "linf"
        assert set(d["metrics"]) >= {"clean", "attacked", "delta", "asr"}
        assert {"zeroshot_top1", "t2x_R@1", "x2t_R@1", "t2x_MRR"} <= set(d["metrics"]["attacked"])
        assert d["extra"]["criterion"] == "zeroshot_top1" and d["extra"]["n_naive"] == 6
        assert all(0.0 <= v <= 1.0 for v in d["metrics"]["attacked"].values())


def test_unsorted_grid_and_validation(setup):
    enc, data = setup
    g = grid("thermal")
    curve = robustness_curve(enc, data, modality="thermal", attack=PGD(steps=1), eps_grid=g[::-1] + [g[0]],
                             n=4, progress=False)
    assert [r.attack["eps"] for r in curve] == pytest.approx(g)
    with pytest.raises(BudgetError):
        robustness_curve(enc, data, modality="thermal", attack=PGD(steps=1), eps_grid=[-0.1], progress=False)
    with pytest.raises(BudgetError):
        robustness_curve(enc, data, modality="thermal", attack=PGD(steps=1), eps_grid=[], progress=False)
    with pytest.raises(RobustMMError):
        robustness_curve(enc, data, modality="thermal", attack=PGD(steps=1), n=0, progress=False)


def test_label_free_dataset_uses_retrieval_criterion(setup):
    enc, data = setup
    sub = data.head(8)
    sub.tasks = {}
    curve = robustness_curve(enc, sub, modality="image", attack=PGD(steps=2), eps_grid=grid("image"), progress=False)
    assert all(r.extra["criterion"] == "x2t_R@1|t2x_R@1" for r in curve)
    assert "zeroshot_top1" not in curve[0].metrics["attacked"]
    for prev, nxt in zip(curve, curve[1:]):  # every item that still counts is attacked at the next eps
        assert nxt.extra["n_attacked"] == prev.extra["n_robust"]
    for r in curve:  # nothing left unattacked while its captions still find it
        assert r.extra["n_robust"] > 0 or r.attacked("t2x_R@1") == 0
