"""A small random-init TinyBind whose BatchNorm statistics are calibrated on real data.

A freshly initialised TinyBind barely changes its embeddings under small perturbations (its
BatchNorm statistics are the identity), so attack tests that check "the loss goes up" would
measure float noise; a few forward passes in train mode give it realistic statistics.

Also what the attack test files share around it: their ``data``/``enc`` fixtures
(:func:`tiny_fixtures`), the first batch of a modality, labels from the model's own predictions,
and the budgets they attack at.
"""
import math

import pytest
import torch

from robustmm.batch import Batch
from robustmm.data.synthscenes import synthscenes
from robustmm.encoders.tinybind import TinyBind
from robustmm.encoders.towers import default_tower_config
from robustmm.evaluation import iter_batches
from robustmm.modalities import get_modality


def tiny_tinybind(data) -> TinyBind:
    """A quarter-width TinyBind with BatchNorm statistics calibrated on ``data``, frozen."""
    torch.manual_seed(0)
    enc = TinyBind({"name": "tinybind-random", "towers": default_tower_config(0.25)})
    enc.train()
    for m in enc.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    with torch.no_grad():
        for modality in data.modalities:
            if modality in enc.modalities:
                enc.encode(modality, data.get(modality, slice(None)))
    return enc.freeze()


def tiny_fixtures(n: int):
    """The two module-scoped fixtures the attack tests share, for ``data, enc = tiny_fixtures(N)``:
    ``data``, ``n`` SynthScenes items (seed 2), and ``enc``, :func:`tiny_tinybind` calibrated on them
    (built under the ``one_thread`` fixture)."""

    @pytest.fixture(scope="module")
    def data():
        return synthscenes(n, seed=2)

    @pytest.fixture(scope="module")
    def enc(data, one_thread):
        return tiny_tinybind(data)

    return data, enc


def first_batch(data, modality: str, n: int) -> Batch:
    """The first ``n`` items of ``data`` in ``modality``, with true labels and the task's prompts."""
    return next(iter_batches(data, modality, n, data.tasks[modality].prompts()))


def predicted(enc, b: Batch) -> Batch:
    """``b`` labelled with the model's own predictions, so every item is correct at the clean input
    and gets attacked (a random model gets most true labels wrong)."""
    with torch.no_grad():
        return b.replace(labels=(enc.encode(b.modality, b.x) @ enc.class_embeddings(b.prompts).T).argmax(1))


def big_eps(modality: str) -> float:
    """The largest budget of the modality's eps grid."""
    return get_modality(modality).eps_grid[-1]


def l2_eps(modality: str, x: torch.Tensor) -> float:
    """An L2 budget comparable to the largest L-inf one (a quarter of the L-inf ball's corner)."""
    return big_eps(modality) * math.sqrt(x[0].numel()) / 4


#: job-file lines that switch off the patch and the caption attacks (slow on CPU), for small run tests
NO_PATCH_SGA_XMAI = """
[patch]
enabled = false
[sga]
enabled = false
[xmai]
enabled = false
"""
