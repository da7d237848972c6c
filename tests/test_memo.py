"""MemoAttack (and AutocastAttack's views) key on held encoders: a model that reuses a freed
model's ``id()`` can never be served that model's adversarial examples."""
import torch

import robustmm.attacks.amp as amp_module
import robustmm.attacks.memo as memo_module
from robustmm.attacks.amp import AutocastAttack
from robustmm.attacks.base import Attack
from robustmm.attacks.memo import MemoAttack
from robustmm.batch import Batch


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
