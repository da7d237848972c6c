"""Shared fixtures: a tiny random-init TinyBind, a small SynthScenes split, the trained model."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import _toy_attack  # noqa: E402, F401  (registers the toy attack before collection: tests/test_contracts.py)
import pytest
import torch

# ROBUSTMM_TEST_THREADS: intra-op threads for the whole session (default: at most 2). CI runs the
# `determinism` tests a second time with another count, which changes the kernels' reduction order.
torch.set_num_threads(int(os.environ.get("ROBUSTMM_TEST_THREADS") or 0) or min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def test_batch_size() -> int:
    """Items per batch for tests that compare results across batch compositions
    (``ROBUSTMM_TEST_BATCH_SIZE``, default 4; CI's second `determinism` run uses another)."""
    return int(os.environ.get("ROBUSTMM_TEST_BATCH_SIZE") or 4)


@pytest.fixture(scope="session")
def rand_encoder():
    """A randomly initialised TinyBind with quarter-width towers (fast; real MiniLM text tower)."""
    from robustmm.encoders.tinybind import TinyBind
    from robustmm.encoders.towers import default_tower_config

    torch.manual_seed(0)
    return TinyBind({"name": "tinybind-random", "towers": default_tower_config(0.25)}).freeze()


@pytest.fixture(scope="session")
def synth_small():
    """32 SynthScenes test items with every modality."""
    from robustmm.data.synthscenes import synthscenes

    return synthscenes(n=32, seed=2, split="test")


@pytest.fixture(scope="session")
def trained():
    """The shipped TinyBind; tests that need trained weights skip when it is absent."""
    from robustmm.encoders.tinybind import ASSETS

    if not (ASSETS / "tinybind.safetensors").exists():
        pytest.skip("trained TinyBind weights not in robustmm/assets (run experiments/train_tinybind.py)")
    import robustmm

    return robustmm.load_encoder("tinybind")


@pytest.fixture(scope="module")
def one_thread():
    """Small CPU tensors: one thread avoids oversubscription on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
