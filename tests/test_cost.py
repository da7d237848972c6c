"""robustmm.cost: model passes counted at the encoder, outermost call only, forward and backward."""
import torch

import robustmm
from robustmm.attacks import PGD
from robustmm.cost import PassCount, count_passes


def _image(enc, n=4):
    data = robustmm.load_dataset("synthscenes", split="test", n=n)
    return data, data.get("image", slice(None)), data.tasks["image"]


def test_count_passes_counts_forward_and_backward_per_item(trained):
    _, x, _ = _image(trained)
    with count_passes() as passes:
        out = trained.encode("image", x.clone().requires_grad_(True))
        assert passes.forward == 4 and passes.backward == 0
        out.sum().backward()
    assert (passes.forward, passes.backward) == (4, 4)
    with torch.no_grad(), count_passes() as passes:
        trained.encode("image", x)
    assert (passes.forward, passes.backward) == (4, 0)


def test_count_passes_counts_nothing_outside_a_block(trained):
    _, x, _ = _image(trained)
    trained.encode("image", x)  # no block open: nothing to count, nothing raised
    with count_passes() as passes:
        pass
    assert passes == PassCount()


def test_a_defended_encoder_is_one_pass_of_the_model_under_attack(trained):
    _, x, _ = _image(trained)
    defended = robustmm.defend(trained, "jpeg", quality=75)
    with count_passes() as passes:
        defended.encode("image", x)
    assert passes.forward == 4  # the wrapped encoder's own call is inside the outer one


def test_blocks_nest_and_texts_count_apart(trained):
    _, x, _ = _image(trained)
    with count_passes() as outer:
        trained.encode("image", x)
        with count_passes() as inner:
            trained.encode_text(["a dog", "a cat"])
    assert (outer.forward, outer.text) == (4, 2)
    assert (inner.forward, inner.text) == (0, 2)


def test_pgd_spends_one_forward_and_backward_per_step(trained):
    _, x, task = _image(trained)
    with count_passes() as passes:
        PGD(eps=4 / 255, steps=5, keep_best=False)(trained, x, labels=task.labels, modality="image",
                                                     classnames=task.classnames)
    assert passes.backward == 5 * 4
    assert passes.forward >= passes.backward


def test_evaluate_records_the_attack_cost(trained):
    data, _, _ = _image(trained, n=6)
    res = robustmm.evaluate(trained, data, modality="image", attack=PGD(eps=4 / 255, steps=3), progress=False)
    assert res.cost["items"] == 6 and res.cost["backward"] == 3.0
    assert res.cost["forward"] >= 3.0
    assert robustmm.evaluate(trained, data, modality="image", progress=False).cost is None
    assert robustmm.Result.from_dict(res.to_dict()).cost == res.cost
