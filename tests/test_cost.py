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


# -- every record path carries its cost --------------------------------------------------------------
import pytest  # noqa: E402
from _tiny import tiny_tinybind  # noqa: E402
from test_contracts import cheap_kwargs  # noqa: E402  (the contract tests' cheap settings per attack)

from robustmm import cost as cost_module  # noqa: E402
from robustmm.batch import Batch  # noqa: E402
from robustmm.data.synthscenes import synthscenes  # noqa: E402
from robustmm.errors import RobustMMError  # noqa: E402
from robustmm.evaluation import iter_batches  # noqa: E402

#: attacks that never run the model (their cost is recorded, and it is zero)
MODEL_FREE = {"noise"}


@pytest.fixture(scope="module")
def tiny(one_thread):
    data = synthscenes(6, seed=2, split="test")
    return tiny_tinybind(data), data


@pytest.mark.parametrize("name", sorted(robustmm.list_attacks()))
def test_every_registered_attack_records_its_cost(tiny, name):
    enc, data = tiny
    try:
        attack = robustmm.build_attack(name, **cheap_kwargs(name, "image"))
        fitted = attack.needs_fit or attack.fit_split is not None
        with count_passes() as fit:
            if fitted:
                attack.fit(enc, synthscenes(8, seed=0, split="train"))
        res = robustmm.evaluate(enc, data, modality="image", attack=attack, progress=False)
    except RobustMMError as e:
        pytest.skip(f"{name} rejects image: {e}")
    assert res.cost is not None and res.cost["items"] == len(data)
    assert robustmm.Result.from_dict(res.to_dict()).cost == res.cost
    spent = res.cost["forward_total"] + res.cost["text_total"]
    if name in MODEL_FREE:
        assert spent == 0
    elif fitted:  # a learned attack (the universal patch) spends its passes fitting; applying it is free
        assert fit.forward > 0 and fit.backward > 0
    elif "captions" in attack.perturbs:  # text attacks embed edited captions: text passes
        assert res.cost["text_total"] > 0 or res.cost["forward_total"] > 0
    else:
        assert res.cost["forward_total"] > 0


def test_ensemble_records_each_parts_passes(trained):
    data = robustmm.load_dataset("synthscenes", split="test", n=8)
    ens = robustmm.build_attack("ensemble", attacks=["apgd-ce", "square"], eps=1 / 255, steps=2,
                                n_queries=5).resolve("image")
    with count_passes() as passes:
        ens(trained, _batch(data))
    ran = ens.describe()["ran"]
    assert [r["part"] for r in ran] == ["apgd-ce", "square"]
    assert ran[0]["forward"] > 0 and ran[0]["backward"] > 0
    assert ran[1]["attacked"] == 0 or (ran[1]["forward"] > 0 and ran[1]["backward"] == 0)  # Square: queries only
    assert sum(r["forward"] for r in ran) < passes.forward  # the ensemble also scores the items between parts


def test_nested_curve_costs_each_eps_point_its_own_passes(trained):
    from robustmm.evaluation.curves import naive_curve, robustness_curve

    enc, data = trained, robustmm.load_dataset("synthscenes", split="test", n=8)
    curve = robustness_curve(enc, data, modality="image", attack=PGD(steps=2, keep_best=False),
                             eps_grid=[1 / 255, 8 / 255], progress=False)
    assert curve[0].extra["n_attacked"] > 0
    for r in curve:
        assert r.cost["items"] == len(data)
        assert r.cost["backward_total"] == 2 * r.extra["n_attacked"]  # only the items attacked at this eps
    naive = naive_curve(enc, data, modality="image", attack=PGD(steps=2, keep_best=False),
                                            eps_grid=[1 / 255], progress=False)
    assert naive[0].cost["backward"] == 2.0


def test_worst_case_costs_the_sum_of_its_threats(tiny):
    from robustmm.evaluation.worst_case import RecordingAttack, worst_case

    enc, data = tiny
    recs, results = {}, {}
    for name, steps in (("pgd-1", 1), ("pgd-2", 2)):
        rec = RecordingAttack(PGD(eps=4 / 255, steps=steps).resolve("image"))
        results[name] = robustmm.evaluate(enc, data, modality="image", attack=rec, progress=False)
        recs[name] = rec.stacked(len(data))
    res = worst_case(enc, data, modality="image", examples=recs, results=results)
    assert res.cost["backward_total"] == sum(r.cost["backward_total"] for r in results.values()) == 3 * len(data)
    assert res.cost["forward"] == sum(r.cost["forward"] for r in results.values())


def test_worst_case_curve_costs_the_attacks_it_ran(tiny):
    from robustmm.evaluation.worst_curve import worst_case_curve

    enc, data = tiny
    out = worst_case_curve(enc, data, modality="image", grid=[4 / 255, 8 / 255],
                           attacks=lambda eps: {"pgd": PGD(eps=eps, steps=2, keep_best=False).resolve("image")})
    for r in out:
        assert r.cost["backward_total"] == 2 * r.extra["n_attacked"]["pgd"]


def test_certification_costs_the_noise_draws(tiny):
    from robustmm.evaluation.certification import certify_dataset

    enc, data = tiny
    res = certify_dataset(enc, data, modality="image", sigma=0.25, n0=4, n=8, n_items=3, retrieval=False,
                          batch_noise=16, progress=False)
    assert res.cost["forward"] == 4 + 8 and res.cost["backward"] == 0 and res.cost["items"] == 3


def test_sanity_checks_cost_each_check_and_the_record_sums_them(tiny):
    from robustmm.evaluation.checks import checks_result, sanity_checks

    enc, data = tiny
    attack = PGD(steps=1, keep_best=False)
    checks = sanity_checks(enc, data, modality="image", attack=attack, steps=(1, 2))
    assert all(c.cost is not None for c in checks)
    assert checks[1].cost["backward_total"] == (1 + 2) * len(data)  # the steps check: 1 and 2 steps
    row = checks_result(checks, enc, data, modality="image", attack=attack)
    assert row.cost["forward_total"] == sum(c.cost["forward_total"] for c in checks)


def test_summed_passes_adds_every_ranks_count(monkeypatch):
    mine, theirs = PassCount(10, 8, 2), PassCount(6, 4, 0)
    monkeypatch.setattr(cost_module.distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(cost_module.distributed, "all_gather_object", lambda obj: [obj, theirs])
    assert cost_module.summed_passes(mine) == PassCount(16, 12, 2)
    monkeypatch.setattr(cost_module.distributed, "is_distributed", lambda: False)
    assert cost_module.summed_passes(mine) is mine


def test_combined_sums_record_costs_per_item():
    a, b = PassCount(12, 10, 0).as_dict(4), PassCount(6, 6, 3).as_dict(2)
    both = cost_module.combined([a, None, b], 4)
    assert (both["forward"], both["backward"], both["text_total"]) == (4.5, 4.0, 3)
    assert cost_module.combined([None, None], 4) is None


# -- PGD hands back the embedding of the iterate it keeps ----------------------------------------------
def _batch(data, modality="image"):
    return next(iter(iter_batches(data, modality, len(data), data.tasks[modality].prompts())))


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_pgd_keep_best_hands_back_the_embedding_of_its_returned_input(trained, modality):
    data = robustmm.load_dataset("synthscenes", split="test", n=8)
    adv = PGD(steps=4)(trained, _batch(data, modality))
    emb = adv.embedding_by(trained)
    with torch.no_grad():
        fresh = trained.encode(modality, adv.x)
    assert emb is not None and torch.equal(emb, fresh)  # bit for bit, not only within NUMERIC_TOLERANCE


def test_pgd_handback_never_outlives_its_input(trained):
    data = robustmm.load_dataset("synthscenes", split="test", n=4)
    adv = PGD(steps=2)(trained, _batch(data))
    assert adv.replace(x=adv.x.clone()).embedding_by(trained) is None  # another x: stale
    assert adv.embedding_by(robustmm.defend(trained, "jpeg", quality=75)) is None  # another encoder
    assert PGD(steps=2, keep_best=False)(trained, _batch(data)).embedded is None
    trained.train()
    try:
        assert adv.embedding_by(trained) is None  # train mode: evaluate's forward would differ
    finally:
        trained.eval()


def test_evaluate_with_the_handback_equals_evaluate_embedding_again(trained, monkeypatch):
    data = robustmm.load_dataset("synthscenes", split="test", n=8)
    with count_passes() as reused:
        res = robustmm.evaluate(trained, data, modality="image", attack=PGD(steps=3), progress=False)
    monkeypatch.setattr(Batch, "embedding_by", lambda self, encoder: None)
    with count_passes() as again:
        ref = robustmm.evaluate(trained, data, modality="image", attack=PGD(steps=3), progress=False)
    assert res.metrics == ref.metrics and res.cost == ref.cost
    assert again.forward - reused.forward == len(data)  # evaluate's own forward of the kept iterate, saved


def test_a_memoised_attack_charges_its_examples_cost_again(trained):
    from robustmm.attacks.memo import MemoAttack

    data = robustmm.load_dataset("synthscenes", split="test", n=4)
    memo = MemoAttack(PGD(steps=2))
    with count_passes() as made:
        memo(trained, _batch(data))
    with count_passes() as reused:
        memo(trained, _batch(data))  # no pass now; charged what making it cost
    assert reused == made and made.backward == 2 * 4
