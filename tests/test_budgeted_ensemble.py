"""The budgeted ensemble (robustmm.attacks.budgeted): fewer passes, never weaker than its first run."""
import pytest
import torch

import robustmm
from robustmm.attacks import APGD, BudgetedEnsemble
from robustmm.batch import Batch
from robustmm.cost import count_passes
from robustmm.errors import BudgetError
from robustmm.evaluation.runner import iter_batches

N = 8


@pytest.fixture(scope="module")
def image_batch(trained) -> Batch:
    data = robustmm.load_dataset("synthscenes", split="test", n=N)
    return next(iter_batches(data, "image", N, data.tasks["image"].prompts()))


def _robust(enc, batch: Batch, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = enc.encode("image", x) @ enc.class_embeddings(batch.prompts).T
    return logits.argmax(1) == batch.labels


def test_budgeted_ensemble_is_registered_and_exported():
    assert "ensemble-budget" in robustmm.list_attacks()
    assert isinstance(robustmm.build_attack("ensemble-budget"), BudgetedEnsemble)


def test_budgeted_ensemble_never_weaker_than_its_first_run(trained, image_batch):
    eps = 1 / 255
    budget = BudgetedEnsemble(eps=eps, steps=5, target_steps=3, n_queries=30)
    first = APGD(eps=eps, steps=5, loss="ce", early_stop=True)
    kept = _robust(trained, image_batch, budget(trained, image_batch).x)
    alone = _robust(trained, image_batch, first(trained, image_batch).x)
    assert not (kept & ~alone).any()  # every item the first run breaks stays broken


def test_budgeted_ensemble_spends_fewer_passes_than_the_ensemble(trained, image_batch):
    eps = 1 / 255
    with count_passes() as budget:
        BudgetedEnsemble(eps=eps, steps=5, target_steps=3, n_target_classes=2, n_queries=20)(trained, image_batch)
    with count_passes() as standard:
        robustmm.build_attack("ensemble", eps=eps, version="cheap")(trained, image_batch)
    assert budget.forward + budget.backward < standard.forward + standard.backward


def test_budgeted_ensemble_spends_less_on_hopeless_items(trained, image_batch):
    attack = BudgetedEnsemble(eps=1 / 255, steps=2, target_steps=2, n_queries=10, hopeless=1.0, hopeless_targets=0,
                              near=0.0)
    attack(trained, image_batch)
    ran = {r["part"]: r for r in attack.describe()["ran"]}
    survivors = ran["apgd-ce"]["attacked"] - ran["apgd-ce"]["broken"]
    assert survivors > 0 and ran["hopeless"]["attacked"] == survivors
    assert "apgd-t" not in ran and "apgd-t-hopeless" not in ran  # no targeted run left for them


def test_budgeted_ensemble_same_seed_same_output(trained, image_batch):
    a = BudgetedEnsemble(eps=1 / 255, steps=3, target_steps=2, n_queries=10, seed=3)
    assert torch.equal(a(trained, image_batch).x, a.replace()(trained, image_batch).x)


def test_apgd_attack_from_starts_at_the_given_point_inside_the_ball(trained, image_batch):
    eps = 2 / 255
    start = (image_batch.x + 10 * eps).clamp(0, 1)  # outside the ball: projected back into it
    out = APGD(eps=eps, steps=0, loss="ce").attack_from(trained, image_batch, start).x
    assert (out - image_batch.x).abs().max() <= eps + 1e-6
    expected = torch.minimum(image_batch.x + eps, torch.ones_like(image_batch.x))
    broken_clean = ~_robust(trained, image_batch, image_batch.x)
    torch.testing.assert_close(out[~broken_clean], expected[~broken_clean])


@pytest.mark.parametrize("bad", [{"steps": 0}, {"hopeless": 1.5}, {"near": -0.1}, {"n_queries": -1},
                                 {"n_target_classes": 0}])
def test_budgeted_ensemble_rejects_bad_settings(bad):
    with pytest.raises(BudgetError):
        BudgetedEnsemble(**bad)
