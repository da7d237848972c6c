"""UniversalPatch (AdvCLIP-style): invariants on a random-init TinyBind, effect on the trained one."""
import json

import pytest
import torch

import robustmm
from robustmm.attacks import build_attack
from robustmm.attacks.patch import UniversalPatch, paste_patch, patch_objective
from robustmm.errors import BudgetError, CheckpointError, InputShapeError, RobustMMError, UnknownNameError
from robustmm.evaluation import iter_batches


@pytest.fixture(scope="module")
def enc(rand_encoder):
    return rand_encoder


@pytest.fixture(scope="module")
def data():
    return robustmm.load_dataset("synthscenes", split="train", n=16, modalities=("image", "video"))


@pytest.fixture(scope="module")
def fitted(enc, data):
    return UniversalPatch(epochs=1, batch_size=8, seed=3).fit(enc, data)


def first_batch(data, n=8, modality="image"):
    return next(iter_batches(data, modality, n, None))


def test_registered_and_described(fitted):
    assert isinstance(build_attack("patch"), UniversalPatch)
    d = fitted.describe()
    assert d["name"] == "patch" and d["eps"] is None
    assert d["size_px"] == 11 and d["image_size"] == [64, 64]  # round(sqrt(0.03 * 64 * 64)) = 11
    assert d["margin_px"] == 4 and d["position"] == "bottom-right"
    assert d["fitted_on"]["encoder"] == "tinybind-random" and d["fitted_on"]["n_train"] == 16
    json.dumps(d)  # result records are JSON


def test_patch_pixels_in_unit_range_and_area(fitted):
    p = fitted.patch
    assert p.shape == (3, 11, 11)
    assert float(p.min()) >= 0.0 and float(p.max()) <= 1.0
    assert abs(11 * 11 / (64 * 64) - 0.03) < 0.002


def test_only_patch_region_changes_and_input_untouched(fitted, enc, data):
    batch = first_batch(data)
    before = batch.x.clone()
    adv = fitted(enc, batch)
    assert torch.equal(batch.x, before)  # input not mutated
    r0, c0 = 64 - 4 - 11, 64 - 4 - 11
    inside = torch.zeros(64, 64, dtype=torch.bool)
    inside[r0 : r0 + 11, c0 : c0 + 11] = True
    assert torch.equal(adv.x[..., ~inside], batch.x[..., ~inside])  # bit-exact outside
    assert torch.equal(adv.x[:, :, r0 : r0 + 11, c0 : c0 + 11], fitted.patch.expand(len(batch), -1, -1, -1))
    assert adv.captions == batch.captions and float(adv.x.min()) >= 0 and float(adv.x.max()) <= 1


def test_same_seed_same_patch(enc, data):
    a = UniversalPatch(epochs=1, batch_size=8, seed=7).fit(enc, data.head(8)).patch
    b = UniversalPatch(epochs=1, batch_size=8, seed=7).fit(enc, data.head(8)).patch
    c = UniversalPatch(epochs=1, batch_size=8, seed=8).fit(enc, data.head(8)).patch
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_call_before_fit_is_a_clear_error(enc, data):
    with pytest.raises(RobustMMError, match="fit"):
        UniversalPatch()(enc, first_batch(data))


def test_random_position_is_seeded_and_inside(enc, data):
    att = UniversalPatch(position="random", epochs=1, batch_size=8, seed=1).fit(enc, data.head(8))
    batch = first_batch(data)
    a, b = att(enc, batch), att(enc, batch)
    assert torch.equal(a.x, b.x)
    changed = (a.x != batch.x).any(1)  # (N, H, W)
    rows = {int(torch.nonzero(m)[:, 0].min()) for m in changed if m.any()}
    assert len(rows) > 1  # items get different places
    for m in changed:  # every change lies in one 11x11 square
        idx = torch.nonzero(m)
        if len(idx):
            assert int(idx[:, 0].max() - idx[:, 0].min()) < 11 and int(idx[:, 1].max() - idx[:, 1].min()) < 11


def test_fixed_positions_and_video_frames(data):
    att = UniversalPatch(modality="video", position=(2, 3))
    att.patch, att.image_size = torch.full((3, 6, 6), 0.5), (32, 32)  # round(sqrt(.03*32*32)) = 6
    batch = first_batch(data, 4, "video")
    adv = att(None, batch)
    assert torch.equal(adv.x[:, :, :, 2:8, 3:9], torch.full_like(adv.x[:, :, :, 2:8, 3:9], 0.5))  # every frame
    mask = torch.ones(32, 32, dtype=torch.bool)
    mask[2:8, 3:9] = False
    assert torch.equal(adv.x[..., mask], batch.x[..., mask])
    rows, cols = UniversalPatch(position="top-left").corners(1, 64, 64)
    assert (rows, cols) == ([4], [4])
    with pytest.raises(InputShapeError):
        att(None, first_batch(data, 2, "image").replace(modality="video"))


def test_paste_is_differentiable():
    p = torch.rand(3, 4, 4, requires_grad=True)
    out = paste_patch(torch.zeros(2, 3, 16, 16), p, [0, 5], [1, 6])
    out.sum().backward()
    assert torch.allclose(p.grad, torch.full_like(p, 2.0))


def test_objective_rewards_moving_away():
    torch.manual_seed(0)
    clean = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    same, _ = patch_objective(clean, clean, clean)
    far, _ = patch_objective(torch.nn.functional.normalize(torch.randn(8, 16), dim=-1), clean, clean)
    assert float(far) > float(same)


def test_save_load_roundtrip(fitted, enc, data, tmp_path):
    fitted.save(tmp_path / "p")
    assert (tmp_path / "p.safetensors").exists() and json.loads((tmp_path / "p.json").read_text())["config"]["area"] == 0.03
    back = UniversalPatch.load(tmp_path / "p")
    assert torch.equal(back.patch, fitted.patch) and back.describe()["size_px"] == 11
    batch = first_batch(data)
    assert torch.equal(back(enc, batch).x, fitted(enc, batch).x)
    (tmp_path / "p.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError):
        UniversalPatch.load(tmp_path / "p")


def test_bad_settings():
    with pytest.raises(BudgetError):
        UniversalPatch(area=0.0)
    with pytest.raises(UnknownNameError):
        UniversalPatch(position="middle")
    with pytest.raises(UnknownNameError):
        UniversalPatch(modality="audio")


def test_patch_fools_trained_tinybind_on_held_out_items(trained):
    enc = trained
    train = robustmm.load_dataset("synthscenes", split="train", n=96, modalities="image")
    test = robustmm.load_dataset("synthscenes", split="test", n=64, modalities="image")
    att = UniversalPatch(area=0.05, epochs=4, batch_size=32, lr=0.1).fit(enc, train)
    res = robustmm.evaluate(enc, test, modality="image", attack=att, progress=False)
    assert res.metrics["attacked"]["zeroshot_top1"] < res.metrics["clean"]["zeroshot_top1"]
    assert att.fooling_rate(enc, test) > 0.1
