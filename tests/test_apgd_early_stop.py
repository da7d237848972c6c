"""APGD's early stopping: an item that meets the zero-shot goal leaves the run with its breaking
iterate, so later steps are spent only on items still robust; verdicts only get harsher, and the
full-batch variant (the default) is unchanged."""
from __future__ import annotations

import pytest
import torch
from _tiny import tiny_tinybind  # noqa: E402  (tests/ is on sys.path)

from robustmm.attacks import build_attack
from robustmm.attacks.apgd import APGD
from robustmm.batch import Batch
from robustmm.data.synthscenes import synthscenes
from robustmm.evaluation import iter_batches
from robustmm.metrics import zeroshot_correct
from robustmm.modalities import CONTINUOUS_MODALITIES, get_modality

pytestmark = pytest.mark.usefixtures("one_thread")

N = 8


@pytest.fixture(scope="module")
def data():
    return synthscenes(N, seed=2)


@pytest.fixture(scope="module")
def enc(data, one_thread):
    return tiny_tinybind(data)


def own_labels(enc, b: Batch) -> Batch:
    """Labelled with the model's own predictions: every item robust at the clean input."""
    with torch.no_grad():
        pred = (enc.encode(b.modality, b.x) @ enc.class_embeddings(b.prompts).T).argmax(1)
    return b.replace(labels=pred)


def first_batch(data, modality: str, n: int = N) -> Batch:
    return next(iter_batches(data, modality, n, data.tasks[modality].prompts()))


def robust(enc, b: Batch, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return zeroshot_correct(enc.encode(b.modality, x), enc.class_embeddings(b.prompts), b.labels)


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
@pytest.mark.parametrize("modality", CONTINUOUS_MODALITIES)
def test_verdicts_only_get_harsher_and_stay_in_budget(enc, data, modality, loss):
    b = own_labels(enc, first_batch(data, modality))
    eps = get_modality(modality).eps_grid[-1]
    kw = {"eps": eps, "steps": 6, "loss": loss, "n_target_classes": 2}
    full = APGD(**kw)(enc, b).x
    early = APGD(**kw, early_stop=True)(enc, b).x
    r_full, r_early = robust(enc, b, full), robust(enc, b, early)
    assert not (r_early & ~r_full).any(), (r_full.tolist(), r_early.tolist())
    assert (early - b.x).abs().amax() <= eps * (1 + 1e-5) + 1e-6
    lo, hi = get_modality(modality).domain
    assert early.min() >= lo and early.max() <= hi


def test_broken_items_leave_the_run(trained, monkeypatch):
    d = synthscenes(32, seed=2)
    b = first_batch(d, "image", 32)
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


def test_label_free_losses_ignore_it(enc, data):
    b = first_batch(data, "audio").replace(labels=None, prompts=None)
    kw = {"eps": get_modality("audio").eps_grid[-1], "steps": 3}
    for loss in ("ce", "embedding"):
        assert torch.equal(APGD(**kw, loss=loss)(enc, b).x, APGD(**kw, loss=loss, early_stop=True)(enc, b).x)


def test_full_batch_is_the_default_and_records_say_which():
    assert APGD().early_stop is False and "early_stop" not in APGD().describe()
    es = build_attack("apgd", early_stop=True)
    assert es.describe()["early_stop"] is True and es.replace(steps=3).early_stop is True
    assert es.with_eps(0.01).settings()["early_stop"] is True
