"""APGD invariants on every continuous modality (tiny random-init TinyBind, offline, CPU), early
stopping (verdicts only get harsher, broken items leave the run), its strength against PGD on the
trained TinyBind, and parity with torchattacks' APGD."""
from __future__ import annotations

import json

import pytest
import torch
from _tiny import big_eps, first_batch, l2_eps, predicted, tiny_fixtures  # noqa: E402  (tests/ is on sys.path)

from robustmm.attacks import build_attack
from robustmm.attacks.apgd import APGD, checkpoints, halve_step
from robustmm.attacks.losses import make_objective
from robustmm.attacks.margin_losses import Scorer, dlr
from robustmm.attacks.pgd import PGD
from robustmm.batch import Batch
from robustmm.cli import main
from robustmm.data.synthscenes import synthscenes
from robustmm.errors import BudgetError, UnknownNameError
from robustmm.evaluation import iter_batches
from robustmm.metrics import zeroshot_correct
from robustmm.modalities import CONTINUOUS_MODALITIES, get_modality

pytestmark = pytest.mark.usefixtures("one_thread")

MODS = CONTINUOUS_MODALITIES
N = 8
STEPS = 4


data, enc = tiny_fixtures(N)


def batch_of(data, enc, modality: str, labels: bool = True) -> Batch:
    """The batch labelled with the model's own predictions (or with no labels)."""
    b = first_batch(data, modality, N)
    return predicted(enc, b) if labels else b.replace(labels=None, prompts=None)


def robust(enc, b: Batch, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return zeroshot_correct(enc.encode(b.modality, x), enc.class_embeddings(b.prompts), b.labels)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("modality", MODS)
def test_within_budget_and_domain(enc, data, modality, norm):
    b = batch_of(data, enc, modality)
    eps = big_eps(modality) if norm == "linf" else l2_eps(modality, b.x)
    adv = APGD(eps=eps, norm=norm, steps=STEPS)(enc, b)
    assert adv.x.shape == b.x.shape and adv.x.dtype == b.x.dtype
    d = (adv.x - b.x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert (size <= eps * (1 + 1e-5) + 1e-6).all(), (size.max().item(), eps)
    assert size.max() > 0.5 * eps
    lo, hi = get_modality(modality).domain
    assert adv.x.min() >= lo and adv.x.max() <= hi
    assert adv.captions is b.captions and adv.labels is b.labels


@pytest.mark.parametrize("modality", MODS)
def test_eps_zero_is_a_copy_and_none_is_the_middle_eps(enc, data, modality):
    b = batch_of(data, enc, modality)
    adv = APGD(eps=0.0, steps=STEPS)(enc, b)
    assert torch.equal(adv.x, b.x) and adv.x.data_ptr() != b.x.data_ptr()
    mid = get_modality(modality).middle_eps
    r = APGD().resolve(modality)
    assert r.eps == mid and r.norm == get_modality(modality).norm
    a1 = APGD(steps=2)(enc, b).x
    assert torch.equal(a1, APGD(eps=mid, steps=2)(enc, b).x)


@pytest.mark.parametrize("modality", ["image", "video", "audio", "pointcloud"])
def test_seeded_deterministic_and_input_untouched(enc, data, modality):
    b = batch_of(data, enc, modality)
    x0, lab0 = b.x.clone(), b.labels.clone()
    a1 = APGD(eps=big_eps(modality), steps=STEPS, seed=1)(enc, b).x
    a2 = APGD(eps=big_eps(modality), steps=STEPS, seed=1)(enc, b).x
    a3 = APGD(eps=big_eps(modality), steps=STEPS, seed=2)(enc, b).x
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)
    assert torch.equal(b.x, x0) and torch.equal(b.labels, lab0)


@pytest.mark.determinism
def test_item_result_does_not_depend_on_batch_composition(enc, data, test_batch_size):
    """steps=0: the per-item seeded start, elementwise, so exact in any batch."""
    b = batch_of(data, enc, "audio")
    k = max(1, min(test_batch_size, len(b) - 1))
    atk = APGD(eps=big_eps("audio"), steps=0, seed=3)
    full = atk(enc, b).x
    part = atk(enc, Batch("audio", b.x[k:], b.captions[k:], b.labels[k:], b.prompts, b.index[k:])).x
    assert torch.equal(full[k:], part)


def test_encoder_weights_modes_and_flags_untouched(enc, data):
    b = batch_of(data, enc, "image")
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    params = list(enc.parameters())
    try:
        enc.train()
        for i, p in enumerate(params):
            p.requires_grad_(i % 3 == 0)
        modes = {n: m.training for n, m in enc.named_modules()}
        flags = [p.requires_grad for p in params]
        APGD(eps=big_eps("image"), steps=STEPS, loss="dlr-targeted", n_target_classes=2)(enc, b)
        assert {n: m.training for n, m in enc.named_modules()} == modes
        assert [p.requires_grad for p in params] == flags and all(p.grad is None for p in params)
    finally:
        enc.freeze()
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())


@pytest.mark.parametrize("modality", ["image", "depth", "pointcloud"])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_zero_shot_loss_goes_up(enc, data, modality, loss):
    b = batch_of(data, enc, modality)
    eps = get_modality(modality).eps_grid[1]
    adv = APGD(eps=eps, steps=STEPS, loss=loss)(enc, b).x
    sc = Scorer.of(enc, b, 100.0, b.x.device)
    with torch.no_grad():
        f = (lambda e: dlr(sc.logits(e), b.labels)) if loss == "dlr" else (
            lambda e: make_objective("ce", enc, b)(e, torch.arange(N)))
        clean, attacked = f(enc.encode(modality, b.x)), f(enc.encode(modality, adv))
    assert attacked.mean() > clean.mean()
    assert robust(enc, b, adv).sum() < N  # every item was correct (own predictions)


@pytest.mark.parametrize("modality", ["image", "audio", "thermal"])
def test_apgd_t_breaks_items(enc, data, modality):
    b = batch_of(data, enc, modality)
    adv = APGD(eps=big_eps(modality), steps=STEPS, loss="dlr-targeted", n_target_classes=3)(enc, b).x
    assert robust(enc, b, adv).float().mean() < 0.5


@pytest.mark.parametrize("loss", ["caption", "embedding", "ce", "dlr-targeted"])
@pytest.mark.parametrize("modality", ["video", "pointcloud"])
def test_label_free_losses(enc, data, modality, loss):
    b = batch_of(data, enc, modality, labels=False)
    adv = APGD(eps=big_eps(modality), steps=STEPS, loss=loss, n_target_classes=2)(enc, b).x
    assert not torch.equal(adv, b.x)
    rows = torch.arange(N)
    if loss == "dlr-targeted":  # toward other items' captions: the X->text margin must shrink
        sc = Scorer.of(enc, b, 100.0, b.x.device)
        obj = lambda e, r: -sc.caption_margin(e, r)  # noqa: E731
    else:
        obj = make_objective("embedding" if loss == "embedding" else "caption", enc, b)
    with torch.no_grad():
        clean, attacked = obj(enc.encode(modality, b.x), rows), obj(enc.encode(modality, adv), rows)
    assert attacked.mean() > clean.mean(), (loss, clean.mean().item(), attacked.mean().item())


def test_checkpoint_schedule_follows_the_paper():
    marks = checkpoints(100)
    assert [t for t, _ in marks][:5] == [22, 41, 57, 70, 80]
    assert [g for _, g in marks][:8] == [22, 19, 16, 13, 10, 7, 6, 6]
    assert marks[-1][0] <= 100 and checkpoints(0) == [] and checkpoints(10)[0] == (2, 2)


def test_halve_step_at_a_checkpoint_follows_the_reference():
    """The reference halves when the loss rose in at most rho * k of the last k steps (<=, so
    exactly 75 % halves), or when the step was not halved at the previous checkpoint and the best
    loss has not improved since."""
    t, f = torch.tensor([True]), torch.tensor([False])
    one = lambda v: torch.tensor([float(v)])  # noqa: E731
    improved, flat = (one(1.0), one(2.0)), (one(2.0), one(2.0))
    # the rises rule alone (the best loss improved): 15 of 20 rises = 0.75 * 20 halves, 16 does not
    assert halve_step(one(15), 20, 0.75, f, *improved).item()
    assert not halve_step(one(16), 20, 0.75, f, *improved).item()
    assert halve_step(one(16), 22, 0.75, f, *improved).item()  # 16 <= 16.5
    assert not halve_step(one(17), 22, 0.75, f, *improved).item()
    # no improvement: halves unless the step was halved at the previous checkpoint
    assert halve_step(one(20), 20, 0.75, f, *flat).item()
    assert not halve_step(one(20), 20, 0.75, t, *flat).item()
    # batched, per item
    got = halve_step(torch.tensor([20.0, 20.0, 5.0]), 20, 0.75, torch.tensor([True, False, True]),
                     torch.tensor([2.0, 2.0, 0.0]), torch.tensor([2.0, 2.0, 1.0]))
    assert got.tolist() == [False, True, True]


def test_first_checkpoint_never_halves_for_lack_of_improvement(monkeypatch, enc, data):
    """APGD passes "halved at the previous checkpoint" as all True at the first checkpoint (the
    reference's initial state), and the halvings it returns at later ones."""
    import robustmm.attacks.apgd as apgd_mod

    seen = []

    def spy(rises, gap, rho, halved_last, best_last, best_now):
        out = halve_step(rises, gap, rho, halved_last, best_last, best_now)
        seen.append((halved_last.clone(), out.clone()))
        return out

    monkeypatch.setattr(apgd_mod, "halve_step", spy)
    b = batch_of(data, enc, "audio")
    APGD(eps=big_eps("audio"), steps=20)(enc, b)
    assert len(seen) == len(checkpoints(20)) and seen[0][0].all()
    for (_, prev), (last, _) in zip(seen, seen[1:]):
        assert torch.equal(prev, last)


@pytest.mark.parametrize("kwargs, err", [({"loss": "cw"}, UnknownNameError), ({"steps": -1}, BudgetError),
                                         ({"n_restarts": 0}, BudgetError), ({"eps": -0.1}, BudgetError),
                                         ({"n_target_classes": 0}, BudgetError), ({"rho": 1.5}, BudgetError)])
def test_bad_settings_are_one_line_errors(kwargs, err):
    with pytest.raises(err) as e:
        APGD(**kwargs)
    assert "\n" not in str(e.value)


def test_registered_and_curve_ready():
    a = build_attack("apgd", steps=5, loss="dlr")
    assert isinstance(a, APGD) and a.with_eps(0.01).eps == 0.01 and a.replace(steps=7).steps == 7
    assert "n_target_classes" not in a.describe() and a.describe()["loss"] == "dlr"
    assert json.dumps(a.resolve("audio").describe())


def test_cli_eval_with_apgd(tmp_path, trained, capsys):
    out = tmp_path / "r.json"
    assert main(["eval", "--modality", "audio", "--attack", "apgd", "--steps", "2", "--n", "16", "-q",
                 "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["attack"]["name"] == "apgd" and rec["attack"]["eps"] == get_modality("audio").middle_eps
    assert rec["metrics"]["attacked"]["zeroshot_top1"] < rec["metrics"]["clean"]["zeroshot_top1"]


# -- early stopping: broken items leave the run with their breaking iterate ------------------------
def counted(enc, monkeypatch) -> list[int]:
    """Patch ``enc.encode`` to record the rows of every differentiable forward pass."""
    rows: list[int] = []
    inner = enc.encode

    def encode(modality, x, *a, **kw):
        if x.requires_grad:
            rows.append(len(x))
        return inner(modality, x, *a, **kw)

    monkeypatch.setattr(enc, "encode", encode)
    return rows


@pytest.mark.parametrize("loss", ["ce", "dlr-targeted"])
@pytest.mark.parametrize("modality", MODS)
def test_early_stop_verdicts_only_get_harsher(enc, data, modality, loss):
    b = batch_of(data, enc, modality)
    eps = big_eps(modality)
    kw = {"eps": eps, "steps": 6, "loss": loss, "n_target_classes": 2}
    full = APGD(**kw)(enc, b).x
    early = APGD(**kw, early_stop=True)(enc, b).x
    r_full, r_early = robust(enc, b, full), robust(enc, b, early)
    assert not (r_early & ~r_full).any(), (r_full.tolist(), r_early.tolist())
    assert (early - b.x).abs().amax() <= eps * (1 + 1e-5) + 1e-6
    lo, hi = get_modality(modality).domain
    assert early.min() >= lo and early.max() <= hi


def test_early_stop_broken_items_leave_the_run(trained, monkeypatch):
    d = synthscenes(32, seed=2)
    b = next(iter_batches(d, "image", 32, d.tasks["image"].prompts()))
    kw = {"eps": 4 / 255, "steps": 10}
    rows_full = counted(trained, monkeypatch)
    full = APGD(**kw)(trained, b).x
    n_full = sum(rows_full)
    rows_full.clear()
    early = APGD(**kw, early_stop=True)(trained, b).x
    n_early = sum(rows_full)
    clean = int(robust(trained, b, b.x).sum())
    assert n_full == clean * 11  # the start and 10 steps, every item robust at the clean input
    r_full, r_early = robust(trained, b, full), robust(trained, b, early)
    assert not (r_early & ~r_full).any()
    broken = int((~r_full).sum())
    assert broken > 16 and n_early < 0.6 * n_full, (broken, n_early, n_full)


def test_early_stop_label_free_losses_ignore_it(enc, data):
    b = batch_of(data, enc, "audio", labels=False)
    kw = {"eps": get_modality("audio").eps_grid[-1], "steps": 3}
    for loss in ("ce", "embedding"):
        assert torch.equal(APGD(**kw, loss=loss)(enc, b).x, APGD(**kw, loss=loss, early_stop=True)(enc, b).x)


def test_early_stop_off_by_default_and_recorded():
    assert APGD().early_stop is False and "early_stop" not in APGD().describe()
    es = build_attack("apgd", early_stop=True)
    assert es.describe()["early_stop"] is True and es.replace(steps=3).early_stop is True
    assert es.with_eps(0.01).settings()["early_stop"] is True


# -- the trained model ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image64(trained):
    d = synthscenes(64, seed=2)
    return next(iter_batches(d, "image", 64, d.tasks["image"].prompts()))


def test_apgd_at_least_as_strong_as_pgd10(trained, image64):
    eps = 2 / 255
    pgd = robust(trained, image64, PGD(eps=eps, steps=10)(trained, image64).x).sum()
    apgd = robust(trained, image64, APGD(eps=eps, steps=10)(trained, image64).x).sum()
    clean = robust(trained, image64, image64.x).sum()
    assert apgd <= pgd < clean, (int(apgd), int(pgd), int(clean))


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_parity_with_torchattacks_apgd(trained, image64, loss):
    torchattacks = pytest.importorskip("torchattacks")
    from robustmm.attacks.torchattacks_adapter import ZeroShotClassifier

    b, eps = image64, 2 / 255
    clf = ZeroShotClassifier(trained, "image", b.prompts).eval()
    ours = APGD(eps=eps, steps=10, loss=loss)(trained, b).x
    theirs = torchattacks.APGD(clf, eps=eps, steps=10, loss=loss, seed=0)(b.x, b.labels)
    with torch.no_grad():
        r_ours = (clf(ours).argmax(1) == b.labels).float().mean().item()
        r_theirs = (clf(theirs).argmax(1) == b.labels).float().mean().item()
    assert abs(r_ours - r_theirs) <= 0.02 + 1e-9, (r_ours, r_theirs)
    assert r_ours < (clf(b.x).argmax(1) == b.labels).float().mean().item()
