"""A small random-init TinyBind whose BatchNorm statistics are calibrated on real data.

A freshly initialised TinyBind barely changes its embeddings under small perturbations (its
BatchNorm statistics are the identity), so attack tests that check "the loss goes up" would
measure float noise; a few forward passes in train mode give it realistic statistics.
"""
import torch

from robustmm.encoders.tinybind import TinyBind
from robustmm.encoders.towers import default_tower_config


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


#: job-file lines that switch off the patch and the caption attacks (slow on CPU), for small run tests
NO_PATCH_SGA_XMAI = """
[patch]
enabled = false
[sga]
enabled = false
[xmai]
enabled = false
"""
