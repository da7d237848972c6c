"""EOT's reduction of per-draw losses: ``mean`` (default, unchanged) and ``softmin``
(``-log mean_t exp(-l_t)``, the expected accuracy's own loss for CE): the folded gradient, k = 1,
bit-identical defaults, the attack contract with softmin, and bad values."""
from __future__ import annotations

import math

import pytest
import test_eot_draws as shared  # tests/ is on sys.path
import torch

from robustmm.attacks import build_attack
from robustmm.attacks.eot import EOT
from robustmm.attacks.eot_reduction import DrawFold, reduce_draws
from robustmm.encoders.input_transforms import defend
from robustmm.errors import RobustMMError

pytestmark = pytest.mark.usefixtures("one_thread")
defended, batch = shared.defended, shared.batch  # the randomized defense and 6 images, as there

EPS = 4 / 255


def _toy(k: int = 5, n: int = 3):
    """Per-draw losses l_t(x) = |W_t x|^2 on a shared x, their values and input gradients."""
    torch.manual_seed(0)
    x = torch.randn(n, 4, dtype=torch.float64, requires_grad=True)
    ws = [torch.randn(4, 4, dtype=torch.float64) for _ in range(k)]
    losses = [((x @ w) ** 2).sum(1) for w in ws]
    grads = [torch.autograd.grad(lt.sum(), x, retain_graph=True)[0] for lt in losses]
    return x, losses, grads


def test_softmin_gradient_is_autograd_of_minus_log_mean_exp():
    x, losses, grads = _toy()
    want_loss = -torch.log(torch.stack([torch.exp(-lt) for lt in losses]).mean(0))
    (want_grad,) = torch.autograd.grad(want_loss.sum(), x)
    loss, grad = reduce_draws([lt.detach() for lt in losses], grads, "softmin")
    assert torch.allclose(loss, want_loss.detach(), atol=1e-10) and torch.allclose(grad, want_grad, atol=1e-10)
    # a soft minimum: between the smallest draw and the mean, and not the mean itself here
    stacked = torch.stack([lt.detach() for lt in losses])
    assert bool((loss >= stacked.min(0).values - 1e-12).all() and (loss <= stacked.mean(0) + 1e-12).all())
    mean_loss, mean_grad = reduce_draws([lt.detach() for lt in losses], grads, "mean")
    assert torch.allclose(mean_loss, stacked.mean(0)) and not torch.allclose(grad, mean_grad)


def test_one_draw_softmin_is_the_mean_and_ce_softmin_is_log_expected_probability():
    _, losses, grads = _toy(k=1)
    a, b = reduce_draws(losses, grads, "softmin"), reduce_draws(losses, grads, "mean")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[0], losses[0])
    p = torch.tensor([[0.9, 0.2], [0.5, 0.01]], dtype=torch.float64)  # (k, n) true-class probabilities
    ce = [-torch.log(row) for row in p]
    loss, _ = reduce_draws(ce, [torch.zeros(2, 1, dtype=torch.float64)] * 2, "softmin")
    assert torch.allclose(loss, -torch.log(p.mean(0))) and math.isclose(loss[1].item(), -math.log(0.105), rel_tol=1e-9)


def _stacked_softmin(losses, grads):
    """The reference fold, keeping every draw: log k - logsumexp(-l), sum_t softmax_t(-l) g_t."""
    neg = -torch.stack(losses)
    w = torch.softmax(neg, dim=0)
    return math.log(len(losses)) - torch.logsumexp(neg, dim=0), (w[..., None] * torch.stack(grads)).sum(0)


def test_streaming_fold_matches_the_stacked_fold_and_the_sequential_mean():
    _, losses, grads = _toy(k=7)
    losses = [lt.detach() for lt in losses]
    fold = DrawFold("softmin")
    for lt, gt in zip(losses, grads):
        fold.add(lt, gt)
    want = _stacked_softmin(losses, grads)
    got = fold.result()
    assert torch.allclose(got[0], want[0], atol=1e-10) and torch.allclose(got[1], want[1], atol=1e-10)
    loss, grad = losses[0], grads[0]  # the mean: the draws added in order, then divided (bit for bit)
    for lt, gt in zip(losses[1:], grads[1:]):
        loss, grad = loss + lt, grad + gt
    mean = reduce_draws(losses, grads, "mean")
    assert torch.equal(mean[0], loss / 7) and torch.equal(mean[1], grad / 7)


def test_streaming_softmin_is_stable_for_large_and_spread_losses():
    losses = [torch.tensor([1000.0, 0.0, 50.0]), torch.tensor([1001.0, 800.0, 50.0]), torch.tensor([999.0, 3.0, 1e4])]
    grads = [torch.full((3, 2), float(t + 1)) for t in range(3)]
    loss, grad = reduce_draws(losses, grads, "softmin")
    want = _stacked_softmin(losses, grads)
    assert bool(torch.isfinite(loss).all() and torch.isfinite(grad).all())
    assert torch.allclose(loss, want[0]) and torch.allclose(grad, want[1])
    assert abs(loss[0].item() - (999.0 + math.log(3) - math.log(1 + math.exp(-1) + math.exp(-2)))) < 1e-3


def test_fold_of_no_draws_is_refused():
    with pytest.raises(RobustMMError, match="draws"):
        DrawFold("mean").result()
    with pytest.raises(RobustMMError, match="EOT reduction"):
        DrawFold("median")


def test_reduce_draws_refuses_bad_input():
    _, losses, grads = _toy(k=2)
    with pytest.raises(RobustMMError, match="did you mean|EOT reduction"):
        reduce_draws(losses, grads, "median")
    with pytest.raises(RobustMMError, match="draws"):
        reduce_draws(losses, grads[:1], "mean")
    with pytest.raises(RobustMMError, match="draws"):
        reduce_draws([], [], "softmin")


def _run(attack, encoder, batch):
    torch.manual_seed(0)
    return attack(encoder, batch).x


def test_default_is_bit_identical_to_explicit_mean(defended, batch):
    apgd = build_attack("apgd", eps=EPS, steps=4, seed=1)
    assert apgd.eot_reduction == "mean" and "eot_reduction" not in apgd.describe()
    default = _run(EOT(apgd, 3), defended, batch)
    assert torch.equal(default, _run(EOT(apgd, 3, reduction="mean"), defended, batch))
    assert torch.equal(default, _run(build_attack("apgd", eps=EPS, steps=4, seed=1, eot_samples=3,
                                                  eot_reduction="mean"), defended, batch))
    assert "eot_reduction" not in EOT(apgd, 3).describe()


def test_softmin_keeps_the_attack_contract_and_changes_the_attack(defended, batch):
    eot = EOT(build_attack("apgd", eps=EPS, steps=4, seed=1), 3, draws="stratified", reduction="softmin")
    a = _run(eot, defended, batch)
    assert torch.equal(a, _run(eot, defended, batch))  # deterministic with the seed
    assert (a - batch.x).abs().max() <= EPS + 1e-6 and a.min() >= 0 and a.max() <= 1
    assert torch.equal(eot.with_eps(0)(defended, batch).x, batch.x)
    assert eot.describe()["eot_reduction"] == "softmin" and eot.replace(steps=2).reduction == "softmin"
    # the weights matter where draws disagree: on this random-weight model the caption loss's draws do
    # (its CE losses are nearly equal across draws, so sign steps coincide with the mean's)
    cap = {red: _run(EOT(build_attack("apgd", eps=EPS, steps=4, seed=1, loss="caption"), 3, draws="stratified",
                         reduction=red), defended, batch) for red in ("mean", "softmin")}
    assert not torch.equal(cap["mean"], cap["softmin"])
    inner = build_attack("apgd", eps=EPS, steps=4, seed=1, eot_samples=3, eot_reduction="softmin")
    assert inner.describe()["eot_reduction"] == "softmin"


def test_bad_reductions_are_one_line_errors():
    apgd = build_attack("apgd", eps=EPS, steps=2)
    with pytest.raises(RobustMMError, match="did you mean|EOT reduction"):
        EOT(apgd, 4, reduction="max")
    with pytest.raises(RobustMMError, match="did you mean|EOT reduction"):
        build_attack("apgd", eot_reduction="softmax")
    with pytest.raises(RobustMMError, match="averages draws itself"):
        EOT(build_attack("pgd", eps=EPS, steps=2), 4, reduction="softmin")
    assert EOT(build_attack("pgd", eps=EPS, steps=2), 4, reduction="mean").reduction == "mean"


def test_adaptive_eot_folds_apgd_draws_with_softmin(defended, rand_encoder):
    """``eval --adaptive`` and the ``[input_defenses]`` cell: APGD (draws averaged by the attack)
    gets softmin; PGD (tiled copies) and deterministic defenses keep what they had."""
    from robustmm.job.cells.input_defenses import adaptive_for

    apgd = adaptive_for(defended, build_attack("apgd", eps=EPS, steps=2), eot_samples=2)
    assert apgd.reduction == "softmin" and apgd.describe()["eot_reduction"] == "softmin"
    pgd = adaptive_for(defended, build_attack("pgd", eps=EPS, steps=2), eot_samples=2)
    assert pgd.reduction == "mean" and "eot_reduction" not in pgd.describe()
    bpda = adaptive_for(defend(rand_encoder, "bit-depth"), build_attack("apgd", eps=EPS, steps=2))
    assert "eot_reduction" not in bpda.describe() and bpda.settings()["eot_reduction"] == "mean"


def test_labels_name_the_softmin_fold():
    """report.md's table and eval's one-line summary say how the draws were folded (mean is implicit)."""
    from robustmm.report.defense_tables import adaptive_label

    assert adaptive_label({"eot_samples": 16, "eot_reduction": "softmin"}) == "EOT-16 softmin"
    assert adaptive_label({"eot_samples": 8}) == "EOT-8"
    assert adaptive_label({"bpda": True, "eot_samples": 4, "eot_reduction": "mean"}, sep="+") == "BPDA+EOT-4"
    assert adaptive_label({}, empty="adaptive") == "adaptive"
