"""The tensor form of every attack's call: ``attack(encoder, x, modality=..., labels=..., classnames=...)``."""
import pytest
import torch

from robustmm.attacks import APGD, PGD, Square, list_attacks
from robustmm.batch import Batch
from robustmm.errors import RobustMMError
from robustmm.modalities import CONTINUOUS_MODALITIES, get_modality


@pytest.mark.parametrize("modality", CONTINUOUS_MODALITIES)
def test_pgd_tensor_call_returns_adversarial_tensor(rand_encoder, synth_small, modality):
    data = synth_small.head(4)
    task = data.tasks[modality]
    x = data.get(modality, slice(None))
    eps = get_modality(modality).middle_eps
    x_adv = PGD(eps=eps, steps=2)(rand_encoder, x, labels=task.labels, modality=modality, classnames=task.classnames)
    assert isinstance(x_adv, torch.Tensor) and x_adv.shape == x.shape and x_adv.dtype == x.dtype
    via_batch = PGD(eps=eps, steps=2)(rand_encoder, Batch.from_tensors(x, modality=modality, labels=task.labels,
                                                                        classnames=task.classnames)).x
    assert torch.equal(x_adv, via_batch)
    assert not torch.equal(x_adv, x)


def test_tensor_call_matches_dataset_prompts(rand_encoder, synth_small):
    data = synth_small.head(4)
    task = data.tasks["image"]
    x = data.get("image", slice(None))
    by_names = PGD(eps=4 / 255, steps=2)(rand_encoder, x, labels=task.labels, modality="image",
                                          classnames=task.classnames, templates=task.templates)
    by_prompts = PGD(eps=4 / 255, steps=2)(rand_encoder, x, labels=task.labels, modality="image", prompts=task.prompts())
    assert torch.equal(by_names, by_prompts)


@pytest.mark.parametrize("attack", [APGD(eps=0.01, steps=2), Square(eps=0.01, n_queries=4)], ids=["apgd", "square"])
def test_other_attacks_take_tensors(rand_encoder, synth_small, attack):
    data = synth_small.head(2)
    task = data.tasks["audio"]
    x = data.get("audio", slice(None))
    x_adv = attack(rand_encoder, x, labels=task.labels, modality="audio", classnames=task.classnames)
    assert x_adv.shape == x.shape and (x_adv - x).abs().max() <= 0.01 + 1e-6


def test_labels_without_classes_name_classnames(rand_encoder, synth_small):
    x = synth_small.get("image", torch.arange(2))
    with pytest.raises(RobustMMError, match="classnames"):
        PGD(eps=4 / 255, steps=1)(rand_encoder, x, labels=[0, 1], modality="image")


def test_no_labels_no_captions_names_what_to_pass(rand_encoder, synth_small):
    x = synth_small.get("image", torch.arange(2))
    with pytest.raises(RobustMMError, match="classnames"):
        PGD(eps=4 / 255, steps=1)(rand_encoder, x, modality="image")


def test_tensor_call_needs_modality(rand_encoder, synth_small):
    x = synth_small.get("image", torch.arange(2))
    with pytest.raises(RobustMMError, match="modality"):
        PGD(eps=4 / 255, steps=1)(rand_encoder, x)


def test_every_attack_class_is_exported_flat():
    import robustmm.attacks as attacks
    from robustmm.attacks.base import attack_class

    for name in list_attacks():
        cls = attack_class(name)
        if cls.__module__.startswith("robustmm."):
            assert getattr(attacks, cls.__name__) is cls, name


def test_from_tensors_checks_shapes():
    x = torch.rand(3, 3, 8, 8)
    with pytest.raises(RobustMMError, match="labels"):
        Batch.from_tensors(x, modality="image", labels=[0, 1])
    with pytest.raises(RobustMMError, match="captions"):
        Batch.from_tensors(x, modality="image", captions=["a", "b"])
    b = Batch.from_tensors(x, modality="image", labels=[0, 1, 0], classnames=["cat", "dog"], captions=["a", "b", ["c", "d"]])
    assert b.prompts == [["a photo of a cat."], ["a photo of a dog."]] and b.captions[2] == ["c", "d"]
