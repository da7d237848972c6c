"""MemoAttack (and AutocastAttack's views) key on held encoders: a model that reuses a freed
model's ``id()`` can never be served that model's adversarial examples."""
import pytest
import torch

import robustmm.attacks.amp as amp_module
import robustmm.attacks.memo as memo_module
from robustmm.attacks import build_attack
from robustmm.attacks.amp import AutocastAttack
from robustmm.attacks.base import Attack, AttackWrapper
from robustmm.attacks.memo import MemoAttack
from robustmm.batch import Batch
from robustmm.encoders.tinybind import TinyBind
from robustmm.encoders.towers import default_tower_config
from robustmm.evaluation import iter_batches


class Tagged(Attack):
    """Writes the encoder's tag into x, so an output shows which encoder made it."""

    def __init__(self):
        self.calls = 0

    def __call__(self, encoder, batch):
        self.calls += 1
        return batch.replace(x=torch.full_like(batch.x, float(encoder.tag)))


class Enc:
    def __init__(self, tag):
        self.tag = tag


def _batch():
    return Batch("image", torch.zeros(2, 3, 4, 4), [["a"], ["b"]], index=torch.tensor([0, 1]))


def test_memo_reuses_examples_for_the_same_encoder():
    inner, enc = Tagged(), Enc(1)
    memo = MemoAttack(inner)
    first, again = memo(enc, _batch()), memo(enc, _batch())
    assert inner.calls == 1 and torch.equal(first.x, again.x)
    again.x.add_(1)  # callers get copies: the remembered output is not theirs to mutate
    assert torch.equal(memo(enc, _batch()).x, first.x)


def test_memo_never_serves_another_encoder_with_the_same_id(monkeypatch):
    # every object "has" the same id(), as a freed encoder's id can be reused by the next model
    monkeypatch.setattr(memo_module, "id", lambda obj: 1234, raising=False)
    inner = Tagged()
    memo = MemoAttack(inner)
    a = memo(Enc(1), _batch())
    b = memo(Enc(2), _batch())  # same id(), different model: must be attacked afresh
    assert inner.calls == 2
    assert float(a.x.max()) == 1.0 and float(b.x.max()) == 2.0


def test_autocast_views_never_wrap_another_encoder_with_the_same_id(monkeypatch):
    monkeypatch.setattr(amp_module, "id", lambda obj: 1234, raising=False)
    monkeypatch.setattr(amp_module, "AutocastEncoder", lambda base: base)  # the view is the encoder itself here
    inner = Tagged()
    wrapped = AutocastAttack(inner)
    assert float(wrapped(Enc(1), _batch()).x.max()) == 1.0
    assert float(wrapped(Enc(2), _batch()).x.max()) == 2.0


# -- on real encoders: the key is (encoder, modality, items) ---------------------------------------
class Counting(AttackWrapper):
    """Records every call that reaches the wrapped attack: (encoder, modality, item indices)."""

    def __init__(self, inner):
        super().__init__(inner)
        self.calls = []

    def __call__(self, encoder, batch):
        index = None if batch.index is None else tuple(batch.index.tolist())
        self.calls.append((encoder, batch.modality, index))
        return self.inner(encoder, batch)


@pytest.fixture(scope="module")
def other_encoder():
    """A second model with other weights: its adversarial examples differ from rand_encoder's."""
    torch.manual_seed(1)
    return TinyBind({"name": "tinybind-random-2", "towers": default_tower_config(0.25)}).freeze()


def _pgd():
    return build_attack("pgd", eps=8 / 255, norm="linf", steps=1, loss="embedding", seed=0)


def _batches(data, modality="image", size=4):
    return list(iter_batches(data, modality, size, None))


def test_memo_makes_examples_once_per_items(rand_encoder, synth_small):
    counting = Counting(_pgd())
    memo = MemoAttack(counting)
    b0, b1 = _batches(synth_small.head(8))
    first = memo(rand_encoder, b0)
    assert torch.equal(memo(rand_encoder, b0).x, first.x) and not torch.equal(first.x, b0.x)
    memo(rand_encoder, b1)  # other items: made for them
    memo(rand_encoder, b1)
    assert [c[2] for c in counting.calls] == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert [o.x.shape[0] for o in memo.outputs()] == [4, 4]


def test_memo_another_real_encoder_gets_its_own_examples(rand_encoder, other_encoder, synth_small):
    counting = Counting(_pgd())
    memo = MemoAttack(counting)
    (b0,) = _batches(synth_small.head(4))
    on_first = memo(rand_encoder, b0)
    on_other = memo(other_encoder, b0)
    assert [c[0] for c in counting.calls] == [rand_encoder, other_encoder]
    assert torch.equal(on_other.x, _pgd()(other_encoder, b0).x)  # made on the other model
    assert not torch.equal(on_other.x, on_first.x)
    assert torch.equal(memo(rand_encoder, b0).x, on_first.x)  # and the first one's are still there


def test_memo_modality_is_part_of_the_key(rand_encoder, synth_small):
    counting = Counting(_pgd())
    memo = MemoAttack(counting)
    (img,) = _batches(synth_small.head(4), "image")
    (aud,) = _batches(synth_small.head(4), "audio")
    memo(rand_encoder, img)
    out = memo(rand_encoder, aud)  # the same item indices, another modality
    assert len(counting.calls) == 2 and out.x.shape == aud.x.shape


def test_memo_without_item_indices_remembers_nothing(rand_encoder, synth_small):
    counting = Counting(_pgd())
    memo = MemoAttack(counting)
    (b0,) = _batches(synth_small.head(4))
    b0 = b0.replace(index=None)
    memo(rand_encoder, b0)
    memo(rand_encoder, b0)
    assert len(counting.calls) == 2 and memo.outputs() == []


def test_memo_fit_clears_and_resolve_keeps_or_renews(rand_encoder, synth_small):
    counting = Counting(_pgd())
    memo = MemoAttack(counting)
    (b0,) = _batches(synth_small.head(4))
    memo(rand_encoder, b0)
    assert memo.resolve("image") is memo  # eps and norm given: resolving changes nothing, the memo stays shared
    memo.fit(rand_encoder, synth_small)
    assert memo.outputs() == []
    memo(rand_encoder, b0)
    assert len(counting.calls) == 2  # made again after the fit
    open_budget = MemoAttack(build_attack("pgd", steps=1, loss="embedding"))  # eps=None until resolved
    resolved = open_budget.resolve("image")
    assert isinstance(resolved, MemoAttack) and resolved is not open_budget and resolved.eps is not None
