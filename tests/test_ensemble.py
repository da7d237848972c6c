"""The worst-case ensemble: at most the minimum of its parts per item, first-breaking examples,
versions, label-free robustness, settings and errors."""
from __future__ import annotations

import json

import pytest
import torch
from _tiny import big_eps, first_batch, predicted, tiny_fixtures  # noqa: E402  (tests/ is on sys.path)

from robustmm.attacks import build_attack
from robustmm.attacks.apgd import APGD
from robustmm.attacks.ensemble import Ensemble
from robustmm.attacks.fab import FAB
from robustmm.attacks.margin_losses import Scorer
from robustmm.attacks.square import Square
from robustmm.batch import Batch
from robustmm.data.synthscenes import synthscenes
from robustmm.encoders.base import NUMERIC_TOLERANCE
from robustmm.errors import UnknownNameError
from robustmm.evaluation import iter_batches
from robustmm.modalities import CONTINUOUS_MODALITIES, get_modality

pytestmark = pytest.mark.usefixtures("one_thread")

N = 8


def robust(enc, b: Batch, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return Scorer.of(enc, b, 100.0, x.device).robust(enc.encode(b.modality, x), torch.arange(len(b)))


@pytest.fixture(scope="module")
def image32(trained):
    d = synthscenes(32, seed=2)
    return next(iter_batches(d, "image", 32, d.tasks["image"].prompts()))


def test_at_most_the_minimum_of_its_parts_per_item(trained, image32):
    b, eps = image32, 1 / 255
    parts = [APGD(eps=eps, steps=5, loss="ce"), APGD(eps=eps, steps=5, loss="dlr-targeted", n_target_classes=2),
             Square(eps=eps, n_queries=25)]
    alone = torch.stack([robust(trained, b, p(trained, b).x) for p in parts])
    ens = Ensemble(parts, eps=eps)
    adv = ens(trained, b).x
    together = robust(trained, b, adv)
    assert not (together & ~alone.all(0)).any()  # broken by any part alone => broken by the ensemble
    assert together.sum() <= alone.sum(1).min() < robust(trained, b, b.x).sum()
    assert ((adv - b.x).abs().amax(1 if adv.dim() == 2 else (1, 2, 3)) <= eps + 1e-6).all()
    ran = ens.describe()["ran"]
    clean_robust = int(robust(trained, b, b.x).sum())
    assert ran[0]["attacked"] == clean_robust
    assert ran[1]["attacked"] == clean_robust - ran[0]["broken"]
    assert ran[2]["attacked"] == ran[1]["attacked"] - ran[1]["broken"]
    assert int(together.sum()) == ran[2]["attacked"] - ran[2]["broken"]


@pytest.mark.determinism
def test_returns_the_first_breaking_example(trained, image32):
    b, eps = image32, 1 / 255
    first = APGD(eps=eps, steps=5, early_stop=True)  # as the ensemble runs it
    adv_first = first(trained, b).x
    broke = robust(trained, b, b.x) & ~robust(trained, b, adv_first)
    adv = Ensemble([first, APGD(eps=eps, steps=5, loss="dlr", seed=7)], eps=eps)(trained, b).x
    assert broke.any()
    torch.testing.assert_close(adv[broke], adv_first[broke], **NUMERIC_TOLERANCE)
    clean_wrong = ~robust(trained, b, b.x)
    assert torch.equal(adv[clean_wrong], b.x[clean_wrong])  # never attacked


def test_parts_stop_early_unless_asked_for_full_batches(trained, image32):
    b, eps = image32, 1 / 255
    first = APGD(eps=eps, steps=5)
    assert Ensemble([first], eps=eps).parts[0][1].early_stop is True
    assert all(p.get("early_stop") for p in Ensemble(version="cheap").describe()["parts"][:2])
    full = Ensemble([first, Square(eps=eps, n_queries=5)], eps=eps, early_stop=False)
    assert full.parts[0][1].early_stop is False and full.settings()["early_stop"] is False
    adv_first = first(trained, b).x
    broke = robust(trained, b, b.x) & ~robust(trained, b, adv_first)
    assert broke.any()  # full-batch parts: exactly the full-batch part's examples
    assert torch.equal(full(trained, b).x[broke], adv_first[broke])


data, enc = tiny_fixtures(N)


@pytest.mark.parametrize("modality", CONTINUOUS_MODALITIES)
def test_every_modality_within_budget_input_untouched(enc, data, modality):
    b = predicted(enc, first_batch(data, modality, N))
    x0 = b.x.clone()
    eps = big_eps(modality)
    ens = Ensemble(["apgd-ce", "apgd-t", Square(n_queries=5)], version="cheap", eps=eps)
    adv = ens(enc, b).x
    assert torch.equal(b.x, x0)
    assert ((adv - b.x).abs().flatten(1).amax(1) <= eps + 1e-6).all()
    lo, hi = get_modality(modality).domain
    assert adv.min() >= lo and adv.max() <= hi
    assert robust(enc, b, adv).sum() < N


def test_label_free_batches_use_x2t_r1(trained):
    d = synthscenes(16, seed=2)
    b = next(iter_batches(d, "video", 16, None)).replace(labels=None, prompts=None)
    eps = get_modality("video").eps_grid[0]
    ens = Ensemble(["apgd-ce", "apgd-t", "square"], version="cheap", eps=eps)
    adv = ens(trained, b).x
    assert robust(trained, b, adv).sum() < robust(trained, b, b.x).sum()
    assert ens.describe()["ran"][0]["attacked"] == int(robust(trained, b, b.x).sum())


def test_versions_and_settings():
    std = Ensemble()
    parts = {p["part"]: p for p in std.describe()["parts"]}
    assert list(parts) == ["apgd-ce", "apgd-t", "fab-t", "square"]  # AutoAttack's standard, in its order
    assert parts["apgd-ce"]["steps"] == 100 and parts["apgd-t"]["n_target_classes"] == 9
    assert parts["apgd-t"]["loss"] == "dlr-targeted" and parts["square"]["n_queries"] == 5000
    assert parts["fab-t"]["name"] == "fab" and parts["fab-t"]["steps"] == 100 and parts["fab-t"]["n_target_classes"] == 9
    assert parts["fab-t"]["alpha_max"] == 0.1 and parts["fab-t"]["eta"] == 1.05 and parts["fab-t"]["beta"] == 0.9
    assert parts["square"]["rescale_schedule"] is False
    cheap = {p["part"]: p for p in build_attack("ensemble", version="cheap").describe()["parts"]}
    assert cheap["apgd-ce"]["steps"] == 10 and cheap["apgd-t"]["n_target_classes"] == 3
    assert cheap["fab-t"]["steps"] == 10 and cheap["fab-t"]["n_target_classes"] == 3
    assert 100 <= cheap["square"]["n_queries"] <= 300
    r = Ensemble(["apgd-dlr", "pgd"], version="cheap").resolve("audio")
    assert r.eps == get_modality("audio").middle_eps
    assert all(p["eps"] == r.eps for p in r.describe()["parts"])
    assert r.with_eps(0.002).parts[1][1].eps == 0.002
    assert "ran" not in r.describe() and json.dumps(r.describe())


def test_fab_can_be_left_out():
    assert [label for label, _ in Ensemble(fab=False).parts] == ["apgd-ce", "apgd-t", "square"]
    assert [label for label, _ in Ensemble(["apgd-ce", "fab-t"], fab=False).parts] == ["apgd-ce"]
    assert Ensemble(fab=False).replace(version="cheap").settings()["fab"] is False
    assert [label for label, _ in Ensemble(["apgd-ce", FAB(steps=3)]).parts] == ["apgd-ce", "fab-t"]
    assert Ensemble(["apgd-ce", FAB(steps=3)], steps=7).parts[1][1].steps == 7


@pytest.mark.parametrize("kwargs", [{"version": "strong"}, {"attacks": ["apgd-ce", "sqaure"]}, {"attacks": []}])
def test_bad_names(kwargs):
    with pytest.raises(UnknownNameError) as e:
        Ensemble(**kwargs)
    assert "\n" not in str(e.value)
