"""TinyBind: the encoder contract for every modality, persistence, clear errors."""
import json

import pytest
import torch

import robustmm
from robustmm.encoders.base import NUMERIC_TOLERANCE
from robustmm.encoders.tinybind import TinyBind
from robustmm.errors import CheckpointError, MissingWeightsError, UnknownNameError
from robustmm.modalities import CONTINUOUS_MODALITIES


@pytest.mark.parametrize("modality", CONTINUOUS_MODALITIES)
def test_encode_contract_and_gradient(rand_encoder, synth_small, modality):
    x = synth_small.get(modality, torch.arange(4)).clone().requires_grad_(True)
    z = rand_encoder.encode(modality, x)
    assert z.shape == (4, rand_encoder.embed_dim)
    assert torch.allclose(z.norm(dim=-1), torch.ones(4), atol=1e-5)
    (g,) = torch.autograd.grad(z[:, 0].sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_encode_text_is_normalised_and_semantic(rand_encoder):
    t = rand_encoder.encode_text(["a large red circle.", "a big red circle.", "a tiny blue star."])
    assert t.shape == (3, 384) and torch.allclose(t.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert t[0] @ t[1] > t[0] @ t[2]  # the frozen MiniLM is a real sentence encoder


@pytest.mark.determinism
def test_a_text_embedding_agrees_within_the_tolerance_whatever_its_batch_mates(rand_encoder, synth_small,
                                                                                  test_batch_size):
    """Alone, among others, in another order, in other batches: the same vector within the stated
    tolerance (other batch shapes may sum in another order); the same call gives the same bits."""
    tower = rand_encoder.text_tower
    caps = [c for item in synth_small.captions for c in item][:30]
    together = tower.embed(caps)
    assert len({len(tower.tokenizer(c)["input_ids"]) for c in caps}) > 3  # texts of several lengths
    assert torch.equal(tower.embed(caps), together)  # the same computation
    shuffled = tower.embed(caps[::-1]).flip(0)
    alone = torch.cat([tower.embed([c]) for c in caps[:8]])
    pieces = torch.cat([tower.embed(caps[i : i + test_batch_size]) for i in range(0, len(caps), test_batch_size)])
    for other, want in [(shuffled, together), (alone, together[:8]), (pieces, together)]:
        torch.testing.assert_close(other, want, **NUMERIC_TOLERANCE)
    ref = tower.tokenizer(caps[:2], padding=True, return_tensors="pt")  # the padded recipe agrees too
    hidden = tower.model(**ref).last_hidden_state
    mask = ref["attention_mask"].unsqueeze(-1).float()
    padded = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    torch.testing.assert_close(padded, together[:2], **NUMERIC_TOLERANCE)


@pytest.mark.determinism
def test_canonical_chunks_give_a_text_the_same_bits_whatever_the_call(rand_encoder, synth_small, test_batch_size):
    """The chunks depend on the set of texts alone; embedded chunk by chunk, on one tower or split
    over two (two ranks) and pooled, every text gets the same bits, and so does a memo filled by
    calls in another order."""
    tower = type(rand_encoder.text_tower)(batch_size=test_batch_size)
    caps = [c for item in synth_small.captions for c in item][:40]
    chunks = tower.chunks(caps)
    assert chunks == tower.chunks(caps[::-1] + caps[:7])  # order and repeats do not matter
    assert sorted(t for c in chunks for t in c) == sorted(set(caps))
    for c in chunks:  # one token length each, at most batch_size texts
        assert len(c) <= test_batch_size and len({len(ids) for ids in tower.tokenizer(c)["input_ids"]}) == 1
    one = {t: e for c in chunks for t, e in zip(c, tower.embed(c))}
    ranks = [type(tower)(batch_size=test_batch_size) for _ in range(2)]
    shares = [(c, ranks[i % 2].embed(c)) for i, c in enumerate(chunks)]
    for c, emb in shares:
        ranks[0].remember(c, emb)
    assert torch.equal(ranks[0](caps), torch.stack([one[t] for t in caps]))
    backwards = type(tower)(batch_size=test_batch_size)(caps[::-1]).flip(0)  # forward embeds the chunks of what is missing
    assert torch.equal(backwards, torch.stack([one[t] for t in caps]))


def test_image_tower_resizes_other_sizes(rand_encoder):
    assert rand_encoder.encode("image", torch.rand(2, 3, 96, 80)).shape == (2, 384)


def test_save_load_roundtrip(tmp_path, rand_encoder, synth_small):
    rand_encoder.save(tmp_path / "m")
    loaded = robustmm.load_encoder(f"tinybind:{tmp_path / 'm'}")
    x = synth_small.get("pointcloud", torch.arange(3))
    assert torch.equal(loaded.encode("pointcloud", x), rand_encoder.encode("pointcloud", x))
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training


def test_missing_weights_is_clear(tmp_path):
    with pytest.raises(MissingWeightsError, match="not found"):
        robustmm.load_encoder(f"tinybind:{tmp_path / 'nothing'}")


def test_corrupted_and_mismatched_checkpoints(tmp_path, rand_encoder):
    rand_encoder.save(tmp_path / "m")
    w = tmp_path / "m.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])  # truncated
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        TinyBind.load(tmp_path / "m")
    rand_encoder.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m.json").read_text())
    cfg["towers"]["image"]["widths"] = [8, 8, 8, 8]
    (tmp_path / "m.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape"):
        TinyBind.load(tmp_path / "m")
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        TinyBind.load(tmp_path / "m")


def test_unknown_model_name_suggests():
    with pytest.raises(UnknownNameError, match="did you mean 'tinybind'"):
        robustmm.load_encoder("tinybnd")


def test_registry_lists_all_families():
    assert {"tinybind", "tinybind-alt", "open_clip", "hf"} <= set(robustmm.list_encoders())


def test_shipped_models_load_with_every_modality(trained):
    assert set(trained.modalities) == set(CONTINUOUS_MODALITIES)
    assert trained.info()["weights"].endswith(".safetensors")
