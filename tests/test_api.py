"""The verb family of robustmm.api: each verb gives what the engine it wraps gives."""
import pytest
import torch

import robustmm
from robustmm.attacks import APGD, PGD
from robustmm.defenses import calibrate as train_heads
from robustmm.encoders.calibrated import CalibratedEncoder
from robustmm.errors import RobustMMError
from robustmm.evaluation import evaluate as run_evaluate
from robustmm.evaluation import robustness_curve
from robustmm.evaluation.certification import certify_dataset
from robustmm.evaluation.threats import evaluate_threats

pytestmark = pytest.mark.usefixtures("one_thread")
EPS = 4 / 255


@pytest.fixture(scope="module")
def data(synth_small):
    return synth_small.head(8)


@pytest.fixture(scope="module")
def defended(rand_encoder, synth_small):
    return robustmm.calibrate(rand_encoder, synth_small, modality="image", epochs=2, steps=1, progress=False)


def test_evaluate_matches_the_runner(rand_encoder, data):
    res = robustmm.evaluate(rand_encoder, data, modality="image", attack=PGD(steps=2), eps=EPS, progress=False)
    ref = run_evaluate(rand_encoder, data, modality="image", attack=PGD(eps=EPS, steps=2), progress=False)
    assert isinstance(res, robustmm.Result) and res.metrics == ref.metrics


def test_curve_matches_robustness_curve(rand_encoder, data):
    grid = [1 / 255, EPS]
    got = robustmm.curve(rand_encoder, data, modality="image", attack=PGD(steps=2), eps=grid, progress=False)
    ref = robustness_curve(rand_encoder, data, modality="image", attack=PGD(steps=2), eps_grid=grid, progress=False)
    assert [r.metrics for r in got] == [r.metrics for r in ref] and len(got) == 2


def test_plot_curves_returns_a_figure(rand_encoder, data):
    from matplotlib.figure import Figure

    curve = robustmm.curve(rand_encoder, data, modality="image", attack=PGD(steps=1), eps=[EPS], progress=False)
    assert isinstance(robustmm.plot_curves(curve), Figure)
    assert isinstance(robustmm.plot_curves([curve, curve], metric="r1"), Figure)
    with pytest.raises(RobustMMError, match="robustmm.curve"):
        robustmm.plot_curves([robustmm.evaluate(rand_encoder, data, modality="image", progress=False)])


def test_calibrate_returns_the_defended_encoder(rand_encoder, synth_small, defended):
    assert isinstance(defended, CalibratedEncoder) and defended.training_info["epochs"] == 2
    ref = train_heads(rand_encoder, synth_small, modality="image", epochs=2, progress=False,
                      attack=robustmm.defenses.default_attack("image", True, steps=1))
    for k, v in ref.heads["image"].state_dict().items():
        assert torch.equal(v, defended.heads["image"].state_dict()[k])


def test_evaluate_threats_option(rand_encoder, data, defended):
    got = robustmm.evaluate(defended, data, modality="image", attack=PGD(eps=EPS, steps=2), threats="all", progress=False)
    cal = robustmm.defenses.Calibration(dict(defended.heads), defended.training_info)
    ref = evaluate_threats(rand_encoder, cal, data, modality="image", attack=PGD(eps=EPS, steps=2),
                           threats=("white-box", "head-unaware", "adaptive", "worst-case"), progress=False)
    assert [r.threat for r in got] == ["white-box", "head-unaware", "adaptive", "worst-case"]
    assert [r.metrics for r in got] == [r.metrics for r in ref]


def test_evaluate_worst_case_option_on_any_encoder(rand_encoder, data):
    got = robustmm.evaluate(rand_encoder, data, modality="image", attack=PGD(eps=EPS, steps=2),
                            worst_case=[APGD(eps=EPS, steps=2)], progress=False)
    assert [r.threat for r in got][-1] == "worst-case" and len(got) == 3
    worst = got[-1].metrics["attacked"]["zeroshot_top1"]
    assert worst <= min(r.metrics["attacked"]["zeroshot_top1"] for r in got[:-1]) + 1e-9


def test_threats_need_heads(rand_encoder, data):
    with pytest.raises(RobustMMError, match="calibration heads"):
        robustmm.evaluate(rand_encoder, data, modality="image", attack=PGD(eps=EPS, steps=1), threats="all")


def test_certify_sigma_or_smoothed_encoder(rand_encoder, data):
    ref = certify_dataset(rand_encoder, data, modality="image", sigma=0.12, n_items=4, n0=4, n=8, progress=False)
    kw = {"n0": 4, "draws": 8, "progress": False}  # n counts items, draws the noise draws (as the CLI)
    got = robustmm.certify(rand_encoder, data, modality="image", sigma=0.12, n=4, **kw)
    smoothed = robustmm.defend(rand_encoder, "smoothing", sigma=0.12, n0=4, draws=8)
    again = robustmm.certify(smoothed, data, modality="image", n=4, progress=False)
    assert got.metrics == ref.metrics == again.metrics
    both = robustmm.certify(rand_encoder, data, modality="image", sigma=[0.12, 0.25], n=2, **kw)
    assert [r.defense["sigma"] for r in both] == [0.12, 0.25]
    with pytest.raises(RobustMMError, match="sigma"):
        robustmm.certify(rand_encoder, data, modality="image")


def test_smoothed_encoder_predict_and_certify(rand_encoder, data):
    smoothed = robustmm.defenses.smooth(rand_encoder, sigma=0.12, n0=4, draws=16, alpha=0.5)
    task = data.tasks["audio"]
    x = data.get("audio", torch.arange(3))
    pred = smoothed.predict("audio", x, classnames=task.classnames, templates=task.templates)
    cert = smoothed.certify("audio", x, prompts=task.prompts())
    assert pred.shape == (3,) and cert.pred.shape == (3,) and (cert.radius >= 0).all()
    with pytest.raises(RobustMMError, match="classnames"):
        smoothed.predict("audio", x)


def test_check_returns_a_checks_record(rand_encoder, data):
    res = robustmm.check(rand_encoder, data, modality="image", steps=1)
    assert res.attack["name"] == "sanity-checks" and isinstance(res.metrics["checks_passed"], bool)
    assert res.extra["checks"]


def test_evaluate_seed_reaches_the_attack_and_is_recorded(rand_encoder, data):
    base = APGD(eps=EPS, steps=2, seed=0)
    a = robustmm.evaluate(rand_encoder, data, modality="image", attack=base, seed=7, n=4, progress=False)
    b = robustmm.evaluate(rand_encoder, data, modality="image", attack=base.replace(seed=7), n=4, seed=7,
                          progress=False)
    assert a.attack["seed"] == 7 and a.metrics == b.metrics
    kept = robustmm.evaluate(rand_encoder, data, modality="image", attack=base.replace(seed=3), n=4, progress=False)
    assert kept.attack["seed"] == 3  # no seed= given: the attack's own seed stands
    points = robustmm.curve(rand_encoder, data, modality="image", attack=PGD(steps=1), eps=[EPS], n=4, seed=5,
                            progress=False)
    assert points[0].attack["seed"] == 5


def test_verbs_refuse_heads_of_another_modality(rand_encoder, data):
    from torch import nn

    audio_only = CalibratedEncoder(rand_encoder, {"audio": nn.Identity()})
    for verb, kw in ((robustmm.evaluate, {}), (robustmm.curve, {"eps": [EPS]}), (robustmm.check, {}),
                     (robustmm.certify, {"sigma": 0.12})):
        with pytest.raises(RobustMMError, match="heads are for audio, not image"):
            verb(audio_only, data, modality="image", **kw)
