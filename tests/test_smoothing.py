"""Randomized smoothing: exact statistics, a linear base classifier with a closed-form smoothed
classifier, determinism, batching/sharding independence, SmoothAdv vs the certificate, bad input."""
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustmm.data.base import MultimodalDataset, ZeroShotTask
from robustmm.encoders.base import Encoder
from robustmm.encoders.smoothed import SmoothedClassifier
from robustmm.encoders.smoothing_stats import binomial_test, clopper_pearson_lower, clopper_pearson_upper
from robustmm.errors import RobustMMError
from robustmm.evaluation.certification import certify_dataset, smoothadv_accuracy

DIM, SIGMA = 16, 0.1


class LinearEncoder(Encoder):
    """Audio 'embeddings' normalize(1 + 5u, 1 - 5u), u = <w, x>: zero-shot class 0 ('pos') iff <w, x> > 0.

    The smoothed classifier is known in closed form: P(class 0 at x) = Phi(<w, x> / sigma) for a
    unit w (as long as clamping to [-1, 1] never triggers), and the distance of x to the decision
    boundary is |<w, x>|.
    """

    name = "linear-toy"
    modalities = ("audio",)
    embed_dim = 2

    def __init__(self):
        super().__init__()
        w = torch.randn(DIM, generator=torch.Generator().manual_seed(0))
        self.register_buffer("w", w / w.norm())

    def _encode(self, modality, x):
        u = x @ self.w
        return torch.nn.functional.normalize(torch.stack([1 + 5 * u, 1 - 5 * u], 1), dim=1)

    def encode_text(self, texts):
        return torch.tensor([[1.0, 0.0] if "pos" in t else [0.0, 1.0] for t in texts])


def linear_data(offsets, captions=None):
    """Items x_i = t_i * w + (a fixed component orthogonal to w); label 0 iff t_i > 0."""
    enc = LinearEncoder()
    t = torch.as_tensor(offsets, dtype=torch.float32)
    v = torch.randn(DIM, generator=torch.Generator().manual_seed(1)) * 0.05
    v = v - (v @ enc.w) * enc.w
    x = t[:, None] * enc.w[None, :] + v[None, :]
    labels = (t <= 0).long()
    caps = captions or [["pos" if lab == 0 else "neg"] for lab in labels.tolist()]
    task = ZeroShotTask(labels, ("pos", "neg"), ("{}",))
    return enc, MultimodalDataset("toy", "test", caps, tensors={"audio": x}, tasks={"audio": task})


def normal_cdf(z):
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def binom_tail(k, n, p):
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


# -- exact statistics ---------------------------------------------------------------------------
@pytest.mark.parametrize("k, n, alpha", [(1, 10, 0.05), (37, 50, 0.001), (99, 100, 0.001), (500, 1000, 0.01), (3, 3, 0.1)])
def test_clopper_pearson_solves_the_binomial_tail_equation(k, n, alpha):
    p = clopper_pearson_lower(k, n, alpha)
    assert 0 < p < k / n + 1e-12
    assert binom_tail(k, n, p) == pytest.approx(alpha, rel=1e-6)  # the defining equation P(Bin(n,p) >= k) = alpha
    assert clopper_pearson_lower(0, n, alpha) == 0.0


def test_clopper_pearson_and_binomial_test_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for k, n, alpha in [(1, 10, 0.05), (37, 50, 0.001), (250, 512, 0.001), (512, 512, 0.001), (9000, 10000, 0.001)]:
        assert clopper_pearson_lower(k, n, alpha) == pytest.approx(stats.beta.ppf(alpha, k, n - k + 1), rel=1e-8, abs=1e-12)
        assert clopper_pearson_upper(k, n, alpha) == pytest.approx(
            1.0 if k == n else stats.beta.ppf(1 - alpha, k + 1, n - k), rel=1e-8)
    for k, n in [(0, 10), (5, 10), (7, 10), (60, 100), (100, 100), (31, 64)]:
        assert binomial_test(k, n) == pytest.approx(stats.binomtest(k, n, 0.5).pvalue, rel=1e-9)


# -- the linear base classifier -------------------------------------------------------------------
def test_certified_radius_below_true_distance_and_approaches_it():
    offsets = [0.05, 0.1, 0.15, -0.08, -0.12]  # distances 0.5 to 1.5 sigma
    enc, data = linear_data(offsets)
    sm = SmoothedClassifier(enc, "audio", SIGMA, prompts=data.tasks["audio"].prompts(), batch_noise=4096)
    x = data.tensors["audio"]
    dist = torch.tensor([abs(t) for t in offsets], dtype=torch.float64)
    gaps = {}
    for n in (200, 20000):
        c = sm.certify(x, 100, n, 0.001)
        assert (c.pred == data.tasks["audio"].labels).all()
        assert (c.radius < dist).all(), (c.radius, dist)  # the certificate never exceeds the truth
        # pA's lower bound stays below the closed-form probability Phi(distance / sigma)
        assert all(float(p) < normal_cdf(float(d) / SIGMA) for p, d in zip(c.p_lower, dist))
        gaps[n] = ((dist - c.radius) / dist).max().item()
    assert gaps[20000] < gaps[200] and gaps[20000] < 0.1  # tighter with more draws, and close


def test_abstain_rate_matches_the_exact_probability():
    # 400 copies of one point with P(class 0) = 0.62: every copy has its own noise (per-item seeds)
    t = SIGMA * 0.305  # Phi(0.305) ~ 0.62
    enc, data = linear_data([t] * 400)
    sm = SmoothedClassifier(enc, "audio", SIGMA, prompts=data.tasks["audio"].prompts())
    n0, n, alpha = 20, 100, 0.01
    c = sm.certify(data.tensors["audio"], n0, n, alpha)
    p = normal_cdf(t / SIGMA)
    ok = [k for k in range(n + 1) if clopper_pearson_lower(k, n, alpha) > 0.5]
    p_sel0 = binom_tail(n0 // 2, n0, p)  # bincount().argmax() breaks a tie towards class 0
    p_cert = p_sel0 * sum(binom_tail(k, n, p) - binom_tail(k + 1, n, p) for k in ok) + (1 - p_sel0) * sum(
        binom_tail(k, n, 1 - p) - binom_tail(k + 1, n, 1 - p) for k in ok)
    abstain = (c.pred < 0).double().mean().item()
    sd = math.sqrt(p_cert * (1 - p_cert) / 400)
    assert abs(abstain - (1 - p_cert)) < 4 * sd, (abstain, 1 - p_cert)
    # PREDICT abstains on a point on the boundary, answers on a far one
    enc2, d2 = linear_data([0.0, 0.3])
    sm2 = SmoothedClassifier(enc2, "audio", SIGMA, prompts=d2.tasks["audio"].prompts())
    pred = sm2.predict(d2.tensors["audio"], 500, 0.001)
    assert pred.tolist() == [-1, 0]


def test_certificates_are_deterministic_for_a_seed_and_change_with_it():
    enc, data = linear_data([0.02, 0.04, -0.03, 0.01])
    x = data.tensors["audio"]
    prompts = data.tasks["audio"].prompts()
    a = SmoothedClassifier(enc, "audio", SIGMA, prompts=prompts, seed=3).certify(x, 10, 200, 0.001)
    b = SmoothedClassifier(enc, "audio", SIGMA, prompts=prompts, seed=3).certify(x, 10, 200, 0.001)
    c = SmoothedClassifier(enc, "audio", SIGMA, prompts=prompts, seed=4).certify(x, 10, 200, 0.001)
    assert torch.equal(a.radius, b.radius) and torch.equal(a.top_count, b.top_count)
    assert not torch.equal(a.top_count, c.top_count)


@pytest.mark.determinism
def test_certify_dataset_does_not_depend_on_the_batch_size(test_batch_size):
    """Exact although the batches differ: the outcome is counts of argmax votes (and radii from
    them); a vote flips only for a noisy draw within rounding (NUMERIC_TOLERANCE) of the class
    boundary, which these ~2000 draws practically never hit."""
    enc, data = linear_data([0.02, 0.04, -0.03, 0.01, 0.09, -0.2, 0.15])
    kw = dict(modality="audio", sigma=SIGMA, n0=16, n=128, alpha=0.01, radii=[0.05, 0.1], retrieval=False, progress=False)
    a = certify_dataset(enc, data, batch_size=test_batch_size if test_batch_size != 7 else 3, **kw)
    b = certify_dataset(enc, data, batch_size=7, **kw)
    assert a.extra["per_item"] == b.extra["per_item"] and a.metrics == b.metrics
    # and an item certifies the same inside any subset (its seed is its dataset position)
    c = certify_dataset(enc, data, batch_size=2, n_items=3, **kw)
    assert c.extra["per_item"]["radius"] == a.extra["per_item"]["radius"][:3]
    assert a.threat == "certified" and a.defense["sigma"] == SIGMA and a.defense["n"] == 128
    assert set(a.metrics["certified"]["top1"]) == {"0", "0.05", "0.1"}


def test_certified_retrieval_matches_the_binary_decision():
    # two items, unique captions: "own caption on top" is the classification event itself
    enc, data = linear_data([0.15, -0.2], captions=[["pos"], ["neg"]])
    res = certify_dataset(enc, data, modality="audio", sigma=SIGMA, n0=16, n=2000, alpha=0.001, radii=[0.1],
                          progress=False)
    items = res.extra["per_item"]
    assert items["x2t_radius"][0] == pytest.approx(items["radius"][0], rel=0.05)
    assert all(0 < r < d for r, d in zip(items["x2t_radius"], [0.15, 0.2]))
    assert res.metrics["certified"]["x2t_R@1"] == {"0": 1.0, "0.1": 1.0}


def test_smoothadv_never_beats_the_certificate_and_does_flip_the_uncertified():
    offsets = [0.03, 0.06, -0.04, 0.2, 0.25, -0.22]
    enc, data = linear_data(offsets)
    res = certify_dataset(enc, data, modality="audio", sigma=SIGMA, n0=32, n=1000, alpha=0.001, radii=[0.1],
                          retrieval=False, progress=False, smoothadv={"steps": 20, "m": 16, "n": 400})
    emp, cert = res.metrics["empirical"], res.metrics["certified"]
    assert emp["violations"] == {"0": 0, "0.1": 0}
    assert emp["top1"]["0.1"] >= cert["top1"]["0.1"] - 1e-9
    # the three items within 0.1 of the boundary are flipped (the attack works), the three beyond are not
    assert emp["top1"]["0.1"] == pytest.approx(0.5) and emp["top1"]["0"] == 1.0
    assert cert["top1"]["0.1"] > 0  # the far items are certified at 0.1
    sm = SmoothedClassifier(enc, "audio", SIGMA, prompts=data.tasks["audio"].prompts())
    assert smoothadv_accuracy(sm, data, radii=[0.1], steps=20, m=16, n=400)["top1"]["0.1"] == emp["top1"]["0.1"]


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, match", [
    ({"sigma": 0.0}, "sigma"), ({"sigma": -1.0}, "sigma"), ({"sigma": float("nan")}, "sigma"),
    ({"sigma": float("inf")}, "sigma"), ({"n0": 0}, "n0"), ({"n": 0}, "n must"), ({"alpha": 0.0}, "alpha"),
    ({"alpha": 1.0}, "alpha"), ({"alpha": 1.5}, "alpha"),
])
def test_bad_arguments_are_one_line_errors(kw, match):
    enc, data = linear_data([0.1])
    args = {"modality": "audio", "sigma": SIGMA, "n0": 4, "n": 8, "alpha": 0.01, "progress": False} | kw
    with pytest.raises(RobustMMError, match=match) as e:
        certify_dataset(enc, data, **args)
    assert "\n" not in str(e.value)


def test_a_modality_without_zero_shot_task_is_a_one_line_error():
    enc, data = linear_data([0.1])
    data.tasks.clear()
    with pytest.raises(RobustMMError, match="no zero-shot task") as e:
        certify_dataset(enc, data, modality="audio", sigma=SIGMA, n0=4, n=8, progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(RobustMMError, match="prompts"):
        SmoothedClassifier(enc, "audio", SIGMA)


# -- two CPU ranks -------------------------------------------------------------------------------
WORKER = """
import json, sys
sys.path.insert(0, {tests!r})
from robustmm import distributed
from robustmm.evaluation.certification import certify_dataset
from test_smoothing import linear_data
distributed.init_from_env("cpu")
enc, data = linear_data([0.02, 0.04, -0.03, 0.01, 0.09, -0.2, 0.15, 0.3, -0.01])
res = certify_dataset(enc, data, modality="audio", sigma=0.1, n0=16, n=128, alpha=0.01, radii=[0.05], batch_size=2,
                      retrieval=False, progress=False, smoothadv={{"steps": 3, "m": 4, "n": 32}})
if distributed.rank() == 0:
    open(sys.argv[1], "w").write(json.dumps({{"metrics": res.metrics, "items": res.extra["per_item"],
                                             "world": distributed.world_size()}}))
distributed.destroy()
"""


def test_two_ranks_certify_exactly_like_one(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(Path(__file__).parent)))
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(k, None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.run([sys.executable, str(script), str(tmp_path / "one.json")], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                        "--master_addr", "127.0.0.1", "--master_port", str(port), str(script), str(tmp_path / "two.json")],
                       env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    one, two = json.loads((tmp_path / "one.json").read_text()), json.loads((tmp_path / "two.json").read_text())
    assert one["world"] == 1 and two["world"] == 2
    assert one["items"] == two["items"] and one["metrics"] == two["metrics"]


def test_certify_dataset_marks_radii_beyond_the_budget_as_unreachable():
    from robustmm.evaluation.certification import max_certified_radius

    enc, data = linear_data([0.5, 0.6, -0.7])  # far from the boundary: every draw agrees
    top = max_certified_radius(SIGMA, 32, 0.001)
    res = certify_dataset(enc, data, modality="audio", sigma=SIGMA, n0=8, n=32, alpha=0.001, radii=[0.5 * top, 2 * top],
                          progress=False)
    cert = res.metrics["certified"]
    far = f"{2 * top:g}"
    assert cert["max_radius"] == res.defense["max_radius"] == pytest.approx(SIGMA * 0.8627, rel=1e-3)
    assert cert["unreachable"] == [far] and cert["top1"][far] is None and cert["x2t_R@1"][far] is None
    assert cert["top1"][f"{0.5 * top:g}"] == 1.0
    assert max(res.extra["per_item"]["radius"]) == pytest.approx(top, rel=1e-4)  # the bound is attained, not passed
