"""FAB-T: the projection onto a hyperplane within the box (L-inf checked against a linear program
solved by scipy, L2 against a brute force over the active sets), the minimal distance on a linear toy model, and the
attack's invariants on every continuous modality (tiny random-init TinyBind, offline, CPU)."""
from __future__ import annotations

import itertools

import pytest
import torch
from _tiny import big_eps, first_batch, l2_eps, predicted, tiny_fixtures  # noqa: E402  (tests/ is on sys.path)
from scipy.optimize import linprog
from torch import nn

from robustmm.attacks import FAB, build_attack
from robustmm.attacks.fab import project_hyperplane_box
from robustmm.batch import Batch
from robustmm.errors import BudgetError
from robustmm.modalities import CONTINUOUS_MODALITIES, get_modality

pytestmark = pytest.mark.usefixtures("one_thread")

N = 6
data, enc = tiny_fixtures(N)


# -- the projection -------------------------------------------------------------------------------
def _cases(seed: int, n: int = 12, dim: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Points in [0, 1]^dim, hyperplanes through a random box point (so they meet the box)."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, dim, generator=g, dtype=torch.float64)
    w = torch.randn(n, dim, generator=g, dtype=torch.float64)
    w[0, 1] = 0.0  # a coordinate the hyperplane ignores
    q = torch.rand(n, dim, generator=g, dtype=torch.float64)
    return p, w, (w * q).sum(1)


def _linf_lp(p, w, b) -> float:
    """min t s.t. |d_i| <= t, 0 <= p + d <= 1, w . (p + d) = b (variables d, t)."""
    dim = len(p)
    c = [0.0] * dim + [1.0]
    a_ub = []
    for i in range(dim):
        row = [0.0] * (dim + 1)
        row[i], row[dim] = 1.0, -1.0
        a_ub.append(row)
        row = [0.0] * (dim + 1)
        row[i], row[dim] = -1.0, -1.0
        a_ub.append(row)
    bounds = [(-pi, 1 - pi) for pi in p.tolist()] + [(0, None)]
    res = linprog(c, A_ub=a_ub, b_ub=[0.0] * (2 * dim), A_eq=[w.tolist() + [0.0]], b_eq=[float(b - w @ p)],
                  bounds=bounds, method="highs")
    assert res.status == 0
    return float(res.fun)


def _l2_brute(p, w, b) -> float:
    """Brute force over active sets: each coordinate free, at its lower or at its upper bound; the
    free ones solve the equality-constrained least squares (d_free = lam w_free); keep the
    smallest feasible norm."""
    lo, hi = -p, 1 - p
    c = float(b - w @ p)
    best = float("inf")
    for pattern in itertools.product((0, 1, 2), repeat=len(p)):
        d = torch.zeros_like(p)
        free = torch.tensor([k == 0 for k in pattern])
        for i, k in enumerate(pattern):
            d[i] = lo[i] if k == 1 else hi[i] if k == 2 else 0.0
        rest = c - float(w[~free] @ d[~free])
        ww = float((w[free] ** 2).sum())
        if ww == 0:
            if abs(rest) > 1e-12:
                continue
        else:
            d[free] = rest / ww * w[free]
        if (d >= lo - 1e-12).all() and (d <= hi + 1e-12).all():
            best = min(best, float(d.norm()))
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_project_hyperplane_box_linf_is_the_lp_minimum(seed):
    p, w, b = _cases(seed)
    d = project_hyperplane_box(p, w, b, "linf", (0.0, 1.0))
    assert torch.allclose((w * (p + d)).sum(1), b, atol=1e-9)  # on the hyperplane
    assert (p + d).min() >= -1e-12 and (p + d).max() <= 1 + 1e-12  # in the box
    assert d[0, 1] == 0 or d[0].abs().max() - d[0, 1].abs() >= -1e-12
    for i in range(len(p)):
        assert d[i].abs().max().item() == pytest.approx(_linf_lp(p[i], w[i], b[i]), abs=1e-7)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_project_hyperplane_box_l2_is_the_brute_force_minimum(seed):
    p, w, b = _cases(seed)
    d = project_hyperplane_box(p, w, b, "l2", (0.0, 1.0))
    assert torch.allclose((w * (p + d)).sum(1), b, atol=1e-9)
    assert (p + d).min() >= -1e-12 and (p + d).max() <= 1 + 1e-12
    assert d[0, 1] == 0  # a zero weight never moves its coordinate in L2
    for i in range(len(p)):
        assert d[i].norm().item() == pytest.approx(_l2_brute(p[i], w[i], b[i]), abs=1e-9)


def test_project_hyperplane_box_small_cases_by_hand():
    p = torch.tensor([[0.5, 0.5], [0.9, 0.5], [0.5, 0.5]], dtype=torch.float64)
    w = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([1.2, 1.8, 0.5], dtype=torch.float64)
    # row 0: both coordinates +0.1; row 1: x is stuck at 1 (room 0.1), so y moves 0.3 in L-inf ...
    d = project_hyperplane_box(p, w, b, "linf", (0.0, 1.0))
    assert torch.allclose(d, torch.tensor([[0.1, 0.1], [0.1, 0.3], [0.0, 0.0]], dtype=torch.float64))
    # ... and in L2 too (the split 0.2/0.2 would leave the box); row 2 is on the hyperplane already
    d2 = project_hyperplane_box(p, w, b, "l2", (0.0, 1.0))
    assert torch.allclose(d2, torch.tensor([[0.1, 0.1], [0.1, 0.3], [0.0, 0.0]], dtype=torch.float64))
    # a hyperplane beyond the box: every coordinate to its bound toward it
    far = project_hyperplane_box(p[:1], w[:1], torch.tensor([5.0], dtype=torch.float64), "linf", (0.0, 1.0))
    assert torch.allclose(far, torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    below = project_hyperplane_box(p[:1], w[:1], torch.tensor([0.4], dtype=torch.float64), "l2", (-1.0, 1.0))
    assert torch.allclose(below, torch.tensor([[-0.3, -0.3]], dtype=torch.float64))  # a negative side, other domain


# -- a linear toy model -------------------------------------------------------------------------
class LinearToy(nn.Module):
    """A two-class "encoder" whose logits are linear in x: emb = x W + c, class embeddings = I."""

    modalities = ("image",)

    def __init__(self, dim: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(dim, 2, generator=g) * 0.2, requires_grad=False)
        self.register_buffer("c", torch.tensor([0.5, 0.0]))

    def check_modality(self, modality: str) -> None:
        assert modality == "image"

    def encode(self, modality: str, x: torch.Tensor, validate: bool = True) -> torch.Tensor:
        return x.flatten(1) @ self.w + self.c

    def class_embeddings(self, prompts) -> torch.Tensor:
        return torch.eye(2)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_finds_the_minimal_distance_on_a_linear_model(norm):
    toy = LinearToy(3 * 4 * 4)
    x = torch.full((3, 3, 4, 4), 0.5)
    x[1] += 0.05
    x[2] -= 0.05
    with torch.no_grad():
        z = 100.0 * toy.encode("image", x)
    labels = z.argmax(1)
    w = (toy.w[:, 1] - toy.w[:, 0]) * 100.0
    w = torch.where(labels[:, None] == 0, w, -w)  # f = z_other - z_label = w . x + c
    margin = -(z.gather(1, (1 - labels)[:, None]) - z.gather(1, labels[:, None]))[:, 0]
    dual = w.abs().sum(1) if norm == "linf" else w.norm(dim=1)
    dmin = margin / dual
    step = dmin if norm == "linf" else dmin * w.abs().amax(1) / w.norm(dim=1)  # the largest coordinate move
    assert (step < 0.4).all()  # the box [0, 1] does not bind: the minimum is the unconstrained one
    b = Batch("image", x, [["a"]] * 3, labels, [["zero"], ["one"]], torch.arange(3))
    adv = FAB(eps=1.0, norm=norm, steps=100)(toy, b).x
    d = (adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    with torch.no_grad():
        assert (100.0 * toy.encode("image", adv)).argmax(1).ne(labels).all()
    assert (size >= dmin * (1 - 1e-4)).all() and (size <= dmin * 1.02).all(), (size, dmin)
    # within a budget just below the minimum nothing is broken: the items come back unchanged
    assert torch.equal(FAB(eps=float(dmin.min()) * 0.99, norm=norm, steps=100)(toy, b).x, x)


# -- every continuous modality ------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("modality", CONTINUOUS_MODALITIES)
def test_fab_runs_on_every_modality(enc, data, modality, norm):
    b = predicted(enc, first_batch(data, modality, N))
    eps = big_eps(modality) if norm == "linf" else l2_eps(modality, b.x)
    atk = FAB(eps=eps, norm=norm, steps=5, n_target_classes=2, n_restarts=2)
    adv = atk(enc, b)
    d = (adv.x - b.x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert (size <= eps * (1 + 1e-5) + 1e-6).all()
    lo, hi = get_modality(modality).domain
    assert adv.x.min() >= lo and adv.x.max() <= hi
    with torch.no_grad():
        emb = enc.encode(modality, adv.x)
        correct = (emb @ enc.class_embeddings(b.prompts).T).argmax(1) == b.labels
    moved = size > 0
    assert not correct[moved].any()  # an item is changed only when it is broken within eps
    assert torch.equal(atk(enc, b).x, adv.x)  # deterministic, random restarts included


def test_fab_without_labels_attacks_the_caption_ranking(enc, data):
    b = first_batch(data, "audio", N).replace(labels=None, prompts=None)
    adv = FAB(eps=big_eps("audio"), steps=4, n_target_classes=2)(enc, b).x
    assert (adv - b.x).abs().max() <= big_eps("audio") + 1e-6


def test_fab_settings_and_errors():
    fab = build_attack("fab")
    assert (fab.steps, fab.n_restarts, fab.n_target_classes) == (100, 1, 9)
    assert (fab.alpha_max, fab.eta, fab.beta) == (0.1, 1.05, 0.9)
    r = fab.resolve("audio")
    assert r.eps == get_modality("audio").middle_eps and r.norm == "linf"
    assert "early_stop" not in r.describe() and FAB(early_stop=True).describe()["early_stop"] is True
    for bad in ({"beta": 0.0}, {"eta": 0.5}, {"alpha_max": 2.0}, {"steps": -1}, {"n_target_classes": 0}):
        with pytest.raises(BudgetError) as e:
            FAB(**bad)
        assert "\n" not in str(e.value)


def test_fab_early_stop_keeps_the_verdicts(enc, data):
    b = predicted(enc, first_batch(data, "image", N))
    eps = big_eps("image")
    full = FAB(eps=eps, steps=6, n_target_classes=2)(enc, b).x
    fast = FAB(eps=eps, steps=6, n_target_classes=2, early_stop=True)(enc, b).x
    assert torch.equal((full != b.x).flatten(1).any(1), (fast != b.x).flatten(1).any(1))
