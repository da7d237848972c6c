"""The open_clip and Hugging Face CLIP adapters, on tiny random-init models built here (no downloads)."""
from __future__ import annotations

import json
import socket

import pytest
import torch
from _fixtures import TINY_OPEN_CLIP_CFG, save_hf_clip, tiny_hf_clip, tiny_open_clip_arch

from robustmm.encoders.preprocess import ImagePreprocessor
from robustmm.errors import CheckpointError, InputShapeError, MissingWeightsError, RobustMMError, UnknownNameError

open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")

from robustmm.encoders import hub  # noqa: E402
from robustmm.encoders.hf_clip import HFClipEncoder, load_hf_clip  # noqa: E402
from robustmm.encoders.open_clip import OpenClipEncoder, load_open_clip  # noqa: E402

TINY_ARCH = "robustmm-test-tiny-vit"


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_arch(tmp_path_factory) -> str:
    """Register a tiny open_clip architecture config (a JSON file, as open_clip's own configs)."""
    return tiny_open_clip_arch(tmp_path_factory.mktemp("oc_cfg"), TINY_ARCH)


@pytest.fixture(scope="module")
def oc_enc() -> OpenClipEncoder:
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_OPEN_CLIP_CFG)
    return OpenClipEncoder.from_model(model, name="open_clip:tiny@none").freeze()


@pytest.fixture(scope="module")
def hf_parts():
    """A tiny CLIPModel and a character-level CLIPTokenizer (no merges), built in memory."""
    return tiny_hf_clip()


@pytest.fixture(scope="module")
def hf_enc(hf_parts) -> HFClipEncoder:
    model, tok = hf_parts
    return HFClipEncoder.from_model(model, tok, name="hf:tiny").freeze()


@pytest.fixture(params=["open_clip", "hf"])
def enc(request, oc_enc, hf_enc):
    return {"open_clip": oc_enc, "hf": hf_enc}[request.param]


@pytest.fixture
def no_network(monkeypatch):
    """Every socket connection attempt is recorded and refused: "fails fast" means "never tries"
    (no retry loop), checked without a wall clock."""
    attempts = []

    def refuse(sock, address, *a, **k):
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1 and an empty HF cache: nothing can be found, nothing may be fetched."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "empty_cache"


# -- the Encoder contract on both adapters ---------------------------------------------------
@pytest.mark.parametrize("hw", [(32, 32), (45, 60), (20, 24)])
def test_encode_image_shapes_and_norm(enc, hw):
    x = torch.rand(3, 3, *hw)
    z = enc.encode("image", x)
    assert z.shape == (3, enc.embed_dim)
    assert z.dtype == torch.float32
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))


def test_encode_image_differentiable_wrt_raw_input(enc):
    x = torch.rand(2, 3, 40, 52, requires_grad=True)
    target = torch.nn.functional.normalize(torch.randn(2, enc.embed_dim), dim=-1)
    (enc.encode("image", x) * target).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


def test_encode_text(enc):
    texts = ["a photo of a cat.", "a dog", "a much longer caption that is certainly truncated by the tiny context window"]
    z = enc.encode_text(texts)
    assert z.shape == (3, enc.embed_dim)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))
    assert not torch.allclose(z[0], z[1])
    torch.testing.assert_close(enc.encode_text(texts[:1])[0], z[0], atol=1e-5, rtol=1e-5)


def test_info_records_preprocessing(enc):
    info = enc.info()
    assert info["name"] and info["weights"]
    pre = info["preprocess"]
    assert pre["image_size"] == [32, 32]
    assert len(pre["mean"]) == 3 and len(pre["std"]) == 3
    assert pre["interpolation"] == "bicubic" and pre["resize_mode"] == "shortest"
    assert info["embed_dim"] == enc.embed_dim
    json.dumps(info)  # result records are JSON


def test_rejects_bad_image_shapes(enc):
    with pytest.raises(InputShapeError):
        enc.encode("image", torch.rand(2, 1, 32, 32))
    with pytest.raises(UnknownNameError):
        enc.encode("audio", torch.rand(2, 100))


def test_raw_input_at_model_size_is_not_resampled(oc_enc):
    x = torch.rand(2, 3, 32, 32)
    pixels = oc_enc.preprocess(x)
    mean = torch.tensor(oc_enc.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(oc_enc.preprocess.std).view(1, 3, 1, 1)
    torch.testing.assert_close(pixels, (x - mean) / std)


# -- preprocessing matches the libraries' own eval transforms --------------------------------
@pytest.mark.parametrize("hw", [(40, 64), (64, 40), (33, 33), (16, 20)])
def test_preprocess_matches_open_clip_transform(hw):
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cfg = PreprocessCfg(size=32, interpolation="bilinear")  # bilinear: no bicubic overshoot clamp
    ref = image_transform_v2(cfg, is_train=False)
    ours = ImagePreprocessor(32, cfg.mean, cfg.std, interpolation="bilinear")
    x = torch.rand(3, *hw)
    torch.testing.assert_close(ours(x[None])[0], ref(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("hw", [(40, 64), (64, 40), (16, 20)])
def test_preprocess_matches_hf_image_processor(hw):
    from transformers import CLIPImageProcessor

    from robustmm.encoders.hf_clip import preprocessor_from_hf_config

    proc = CLIPImageProcessor(
        size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}, resample=2, do_rescale=False
    )
    x = torch.rand(3, *hw)
    ref = proc(images=[x], return_tensors="pt")["pixel_values"][0]
    ours = preprocessor_from_hf_config(proc.to_dict(), image_size=32)
    assert ours.info()["resize_size"] == 36 and ours.interpolation == "bilinear"
    torch.testing.assert_close(ours(x[None])[0], ref, atol=1e-5, rtol=1e-5)


def test_preprocess_longest_and_squash_modes():
    p = ImagePreprocessor(32, (0.5,) * 3, (0.5,) * 3, resize_mode="longest", fill=0.0)
    y = p.resize_and_crop(torch.ones(1, 3, 16, 64))
    assert y.shape == (1, 3, 32, 32)
    assert y[..., 0, :].abs().max() == 0 and y[..., 16, :].min() > 0.99  # padded top, image in the middle
    q = ImagePreprocessor((24, 40), (0.5,) * 3, (0.5,) * 3, resize_mode="squash")
    assert q(torch.rand(2, 3, 50, 50)).shape == (2, 3, 24, 40)
    with pytest.raises(RobustMMError):
        ImagePreprocessor(32, (0.5,) * 3, (0.5,) * 3, resize_mode="stretch")


# -- open_clip: names, checkpoints, missing weights --------------------------------------------
def test_open_clip_random_init_from_registered_arch(tiny_arch):
    enc = load_open_clip(f"{tiny_arch}@none")
    assert enc.name == f"open_clip:{tiny_arch}@none"
    assert enc.embed_dim == 32 and enc.info()["architecture"] == tiny_arch
    assert "random" in enc.weights
    assert enc.encode("image", torch.rand(1, 3, 48, 40)).shape == (1, 32)


def test_open_clip_local_safetensors_checkpoint(tiny_arch, tmp_path, oc_enc):
    from safetensors.torch import save_file

    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in oc_enc.model.state_dict().items()}, str(path))
    enc = load_open_clip(f"{tiny_arch}@{path}")
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(enc.encode("image", x), oc_enc.encode("image", x))
    torch.testing.assert_close(enc.encode_text(["a cat"]), oc_enc.encode_text(["a cat"]))
    assert enc.weights == str(path)


def test_open_clip_bad_checkpoints(tiny_arch, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError):
        load_open_clip(f"{tiny_arch}@{bad}")
    with pytest.raises(MissingWeightsError, match="not found"):
        load_open_clip(f"{tiny_arch}@{tmp_path / 'absent.safetensors'}")
    # a pickled .pt that is not a plain state dict is refused by torch.load(weights_only=True)
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": _Evil()}, str(evil))
    with pytest.raises(CheckpointError):
        load_open_clip(f"{tiny_arch}@{evil}")


class _Evil:
    """Stands in for an arbitrary pickled object in a checkpoint (never unpickled by us)."""


def test_open_clip_name_errors(tiny_arch):
    with pytest.raises(UnknownNameError):
        load_open_clip("ViT-Q-99@none")
    with pytest.raises(UnknownNameError, match="laion2b_s34b_b79k"):
        load_open_clip("ViT-B-32@no_such_tag")
    with pytest.raises(RobustMMError, match="needs a weights tag"):
        load_open_clip("ViT-B-32")


def test_open_clip_missing_pretrained_fails_fast(offline, no_network):
    with pytest.raises(MissingWeightsError) as info:
        load_open_clip("ViT-B-32@laion2b_s34b_b79k", cache_dir=str(offline))
    assert no_network == []
    msg = str(info.value)
    assert "\n" not in msg
    assert "ViT-B-32@laion2b_s34b_b79k" in msg and "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in msg
    assert str(offline) in msg and "HF_HUB_OFFLINE" in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_unreachable_hub_is_treated_as_offline(monkeypatch, tmp_path, no_network):
    """Without HF_HUB_OFFLINE, an unreachable hub must not trigger huggingface_hub's retry loop."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    if hub.offline_requested():
        pytest.skip("huggingface_hub was imported with offline mode on")
    with pytest.raises(MissingWeightsError, match="unreachable"):
        load_open_clip("ViT-B-32@openai", cache_dir=str(tmp_path))
    with pytest.raises(MissingWeightsError, match="unreachable"):
        load_hf_clip("openai/clip-vit-base-patch32", cache_dir=str(tmp_path))
    assert no_network == []  # no download attempted, so no retry loop
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE is False  # the temporary offline switch is undone


def test_open_clip_small_real_arch_random_init():
    enc = load_open_clip("ViT-S-32@none")
    assert enc.embed_dim == 384
    assert enc.info()["preprocess"]["image_size"] == [224, 224]
    assert enc.encode("image", torch.rand(1, 3, 64, 80)).shape == (1, 384)


# -- Hugging Face CLIP -----------------------------------------------------------------------
def test_hf_load_saved_directory(hf_parts, hf_enc, tmp_path):
    enc = load_hf_clip(str(save_hf_clip(tmp_path, *hf_parts)))
    assert enc.name == f"hf:{tmp_path}" and enc.embed_dim == 24
    pre = enc.info()["preprocess"]
    assert pre["image_size"] == [32, 32] and pre["resize_size"] == 32 and pre["interpolation"] == "bicubic"
    x = torch.rand(2, 3, 50, 40)
    torch.testing.assert_close(enc.encode("image", x), hf_enc.encode("image", x))
    torch.testing.assert_close(enc.encode_text(["a cat"]), hf_enc.encode_text(["a cat"]))


def test_hf_directory_without_processor_config_uses_clip_defaults(hf_parts, tmp_path, caplog):
    enc = load_hf_clip(str(save_hf_clip(tmp_path, *hf_parts, processor=False)))
    pre = enc.info()["preprocess"]
    assert pre["image_size"] == [32, 32] and pre["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert "image processor config" in caplog.text


def test_hf_missing_model_fails_fast(offline, no_network):
    with pytest.raises(MissingWeightsError) as info:
        load_hf_clip("openai/clip-vit-base-patch32", cache_dir=str(offline))
    assert no_network == []
    msg = str(info.value)
    assert "\n" not in msg and "openai/clip-vit-base-patch32" in msg and str(offline) in msg


def test_hf_missing_directory(tmp_path):
    with pytest.raises(MissingWeightsError, match="not found"):
        load_hf_clip(str(tmp_path / "nope"))
    with pytest.raises(MissingWeightsError):
        load_hf_clip(str(tmp_path))  # exists, but holds no model


# -- the registry ------------------------------------------------------------------------------
def test_registry_names(tiny_arch, offline):
    from robustmm.encoders import list_encoders, load_encoder

    families = list_encoders()
    assert "open_clip" in families and "hf" in families
    enc = load_encoder(f"open_clip:{tiny_arch}@none")
    assert isinstance(enc, OpenClipEncoder) and not enc.training
    assert not any(p.requires_grad for p in enc.parameters())
    with pytest.raises(MissingWeightsError):
        load_encoder("hf:openai/clip-vit-base-patch32", cache_dir=str(offline))
