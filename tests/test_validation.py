"""Validation at the public API: every bad input raises a specific RobustMMError (a ValueError)
whose message names the problem, before any model work."""
import pytest
import torch

import robustmm
from robustmm.errors import (
    BudgetError,
    CheckpointError,
    EmptyDatasetError,
    InputShapeError,
    InputValueError,
    UnknownNameError,
)


@pytest.fixture(scope="module")
def enc(rand_encoder):
    return rand_encoder


CASES = [
    ("image wrong shape", lambda e: e.encode("image", torch.rand(2, 3, 5)), InputShapeError, "expected shape (N, 3, *, *)"),
    ("integer pixels", lambda e: e.encode("image", torch.randint(0, 255, (2, 3, 8, 8))), InputShapeError, "floating-point"),
    ("NaN", lambda e: e.encode("thermal", torch.full((2, 1, 8, 8), float("nan"))), InputValueError, "NaN or Inf"),
    ("audio out of range", lambda e: e.encode("audio", torch.full((2, 400), 3.0)), InputValueError, "[-1, 1]"),
    ("point cloud channels", lambda e: e.encode("pointcloud", torch.rand(2, 64, 2)), InputShapeError, "(N, *, 6)"),
    ("empty batch", lambda e: e.encode("image", torch.rand(0, 3, 8, 8)), InputShapeError, "empty batch"),
    ("unknown modality", lambda e: e.encode("smell", torch.rand(2, 3)), UnknownNameError, "unknown modality 'smell'"),
    ("texts not a list", lambda e: e.encode_text(42), InputShapeError, "list of strings"),
    ("texts with a non-string", lambda e: e.encode_text(["a", 3]), InputShapeError, "non-string"),
    ("no texts", lambda e: e.encode_text([]), EmptyDatasetError, "empty list"),
    ("head of the wrong size", lambda e: e.with_heads({"image": torch.nn.Linear(3, 3)}), CheckpointError, "embed_dim 3"),
    ("head for a missing modality", lambda e: e.with_heads({"smell": torch.nn.Identity()}), UnknownNameError, "smell"),
    ("negative eps", lambda e: robustmm.build_attack("pgd", eps=-0.1), BudgetError, "eps"),
]


@pytest.mark.parametrize("what, call, error, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_a_specific_error(enc, what, call, error, needle):
    with pytest.raises(error) as info:
        call(enc)
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError)


def test_valid_inputs_pass_and_boundaries_are_inside(enc):
    z = enc.encode("image", torch.zeros(2, 3, 16, 16))  # exactly on the domain's lower bound
    assert z.shape == (2, enc.embed_dim)
    assert enc.encode("audio", torch.ones(1, 400)).shape == (1, enc.embed_dim)
    assert enc.encode_text("one string").shape == (1, enc.embed_dim)
