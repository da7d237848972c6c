"""The torchattacks bridge: ZeroShotClassifier + TorchAttacksAttack vs robustmm's own PGD."""
from __future__ import annotations

import time

import pytest
import torch
from _tiny import first_batch, predicted, tiny_fixtures  # noqa: E402  (tests/ is on sys.path)

from robustmm.attacks import build_attack
from robustmm.attacks.pgd import PGD
from robustmm.attacks.torchattacks_adapter import TorchAttacksAttack, ZeroShotClassifier, as_4d
from robustmm.batch import Batch
from robustmm.data.synthscenes import synthscenes
from robustmm.encoders.tinybind import ASSETS
from robustmm.errors import BudgetError, RobustMMError, UnknownNameError
from robustmm.evaluation import iter_batches
from robustmm.metrics import zeroshot_correct
from robustmm.modalities import CONTINUOUS_MODALITIES, get_modality

pytestmark = pytest.mark.usefixtures("one_thread")

N = 8
HAVE_WEIGHTS = (ASSETS / "tinybind.safetensors").exists() and (ASSETS / "tinybind.json").exists()
needs_weights = pytest.mark.skipif(
    not HAVE_WEIGHTS, reason="trained TinyBind weights (robustmm/assets/tinybind.*) not built yet"
)


data, enc = tiny_fixtures(N)


def batch_of(data, modality: str) -> Batch:
    return first_batch(data, modality, N)


@pytest.mark.parametrize("modality", CONTINUOUS_MODALITIES)
def test_bridge_pgd_equals_robustmm_pgd_without_random_start(enc, data, modality):
    """Same algorithm, same settings: torchattacks.PGD through the bridge gives the same examples.

    For [-1, 1] domains the bridge rescales to [0, 1] and back, so a few near-zero gradients may
    flip sign through rounding; allow 1% of the elements to differ.
    """
    b = batch_of(data, modality)
    eps = get_modality(modality).eps_grid[-1]
    ours = PGD(eps=eps, steps=3, step_size=eps / 4, random_start=False, keep_best=False)(enc, b).x  # torchattacks: last iterate
    theirs = TorchAttacksAttack("PGD", eps=eps, alpha=eps / 4, steps=3, random_start=False)(enc, b).x
    assert theirs.shape == b.x.shape
    differ = ((ours - theirs).abs() > 1e-6).float().mean().item()
    assert differ <= 0.01, differ
    assert (theirs - b.x).abs().max() <= eps + 1e-6


def test_classifier_logits_are_zero_shot_logits(enc, data):
    for modality in ("image", "audio"):
        b = batch_of(data, modality)
        raw = ZeroShotClassifier(enc, modality, b.prompts)
        centers = enc.class_embeddings(b.prompts)
        with torch.no_grad():
            logits = raw(b.x)
            assert torch.allclose(logits, 100 * enc.encode(modality, b.x) @ centers.T, atol=1e-4)
            unit = ZeroShotClassifier(enc, modality, centers, input_range="unit", sample_shape=b.x.shape[1:])
            x01 = unit.from_raw(b.x)
            assert x01.min() >= 0 and x01.max() <= 1
            assert torch.allclose(unit(as_4d(x01)), logits, atol=1e-3)


@pytest.mark.parametrize("name,kwargs", [("FGSM", {}), ("APGD", {"steps": 3}), ("PGDL2", {"steps": 2}),
                                         ("Square", {"n_queries": 10})])
@pytest.mark.parametrize("modality", ["image", "audio", "pointcloud"])
def test_other_attacks_run_on_any_modality(enc, data, modality, name, kwargs):
    b = predicted(enc, batch_of(data, modality))
    spec = get_modality(modality)
    eps = spec.eps_grid[-1] if name != "PGDL2" else spec.eps_grid[-1] * 8
    x0 = b.x.clone()
    adv = TorchAttacksAttack(name, eps=eps, **kwargs)(enc, b)
    assert torch.equal(b.x, x0)  # input untouched
    lo, hi = spec.domain
    assert adv.x.shape == b.x.shape and adv.x.min() >= lo and adv.x.max() <= hi
    d = (adv.x - b.x).flatten(1)
    size = d.norm(dim=1) if name == "PGDL2" else d.abs().amax(1)
    assert (size <= eps * (1 + 1e-5) + 1e-6).all()


def test_registry_describe_and_validation(enc, data):
    atk = build_attack("torchattacks", attack_name="APGD", eps=4 / 255, steps=5)
    assert isinstance(atk, TorchAttacksAttack)
    d = atk.describe()
    assert d["name"] == "torchattacks" and d["attack_name"] == "APGD" and d["steps"] == 5
    assert atk.with_eps(8 / 255).eps == pytest.approx(8 / 255)
    with pytest.raises(UnknownNameError):
        TorchAttacksAttack("NotAnAttack")
    with pytest.raises(RobustMMError):
        TorchAttacksAttack("PGD", stepz=3)
    with pytest.raises(BudgetError):
        TorchAttacksAttack("PGD", eps=-1.0)
    b = batch_of(data, "image")
    with pytest.raises(RobustMMError):
        atk(enc, b.replace(labels=None))
    assert torch.equal(TorchAttacksAttack("PGD", eps=0.0)(enc, b).x, b.x)


def test_default_step_size_scales_with_the_budget(enc, data):
    """An unset alpha keeps torchattacks' ratio to eps (PGD: eps/4), not its image default 2/255."""
    kw = TorchAttacksAttack("PGD", eps=0.002).torchattacks_kwargs("audio", 10)  # audio: domain width 2
    assert kw["eps"] == pytest.approx(0.001) and kw["alpha"] == pytest.approx(0.0005 / 2)
    assert TorchAttacksAttack("PGD", eps=4 / 255).torchattacks_kwargs("image", 10)["alpha"] == pytest.approx(1 / 255)
    assert TorchAttacksAttack("PGDL2", eps=0.5).torchattacks_kwargs("image", 10)["alpha"] == pytest.approx(0.1)
    assert TorchAttacksAttack("PGD", eps=0.002, alpha=0.001).torchattacks_kwargs("audio", 10)["alpha"] == pytest.approx(0.0005)
    assert "alpha" not in TorchAttacksAttack("APGD", eps=0.002).torchattacks_kwargs("audio", 10)
    resolved = TorchAttacksAttack("PGD").resolve("audio")
    assert resolved.eps == get_modality("audio").middle_eps and resolved.describe()["alpha"] == pytest.approx(resolved.eps / 4)
    b = batch_of(data, "audio")
    adv = TorchAttacksAttack("PGD", eps=0.002, steps=1, random_start=False)(enc, b).x
    step = (adv - b.x).abs().max().item()  # one step of alpha; 2/255 would jump to the edge of the ball
    assert 0 < step <= 0.0005 + 1e-6


# -- trained TinyBind: robust accuracies agree -------------------------------------------------------
def _robust_accuracies(n: int, steps: int) -> tuple[float, float, float, float]:
    import robustmm

    enc = robustmm.load_encoder("tinybind")
    ds = synthscenes(n, seed=2, modalities=("image",))
    b = next(iter_batches(ds, "image", n, ds.tasks["image"].prompts()))
    centers = enc.class_embeddings(b.prompts)
    eps = 2 / 255
    ours = PGD(eps=eps, norm="linf", steps=steps, step_size=eps / 4, random_start=True, seed=0,
               keep_best=False)(enc, b).x  # torchattacks returns the last iterate
    theirs = TorchAttacksAttack("PGD", eps=eps, alpha=eps / 4, steps=steps, random_start=True, seed=0)(enc, b).x

    def acc(x: torch.Tensor) -> float:
        with torch.no_grad():
            return zeroshot_correct(enc.encode("image", x), centers, b.labels).float().mean().item()

    return acc(b.x), acc(ours), acc(theirs), eps


@needs_weights
def test_bridge_matches_robustmm_pgd_on_trained_tinybind_fast():
    clean, ours, theirs, _ = _robust_accuracies(64, 5)
    assert clean > 0.3
    assert ours < clean and theirs < clean
    assert abs(ours - theirs) <= 4 / 64 + 1e-9, (clean, ours, theirs)


@pytest.mark.slow
@needs_weights
def test_bridge_matches_robustmm_pgd_on_trained_tinybind():
    t0 = time.perf_counter()
    clean, ours, theirs, _ = _robust_accuracies(200, 10)
    assert ours < clean and theirs < clean
    assert abs(ours - theirs) <= 0.03 + 1e-9, (clean, ours, theirs, time.perf_counter() - t0)
