"""EOT and BPDA: the EOT gradient is the mean of per-draw loss gradients, EOT beats the plain
attack on a randomized toy, APGD takes an item's k draws as one item (no tiled copies), BPDA beats
the naive attack on a rounding defense, errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _tiny import first_batch, predicted, tiny_fixtures  # noqa: E402  (tests/ is on sys.path)

from robustmm.attacks import build_attack
from robustmm.attacks.apgd import APGD
from robustmm.attacks.bpda import BPDA, bpda, bpda_enabled, declared, straight_through
from robustmm.attacks.eot import EOT, EOTEncoder, tie_identical_rows
from robustmm.batch import Batch
from robustmm.encoders.base import NUMERIC_TOLERANCE, Encoder
from robustmm.errors import BudgetError, RobustMMError
from robustmm.metrics import zeroshot_correct

pytestmark = pytest.mark.usefixtures("one_thread")

N = 16


class _View(Encoder):
    def __init__(self, base: Encoder):
        super().__init__()
        self.base = base
        self.name, self.modalities, self.embed_dim = base.name + "+toy", base.modalities, base.embed_dim

    def encode_text(self, texts):
        return self.base.encode_text(texts)


class NoisyGradient(_View):
    """A randomized model whose forward is exact but whose gradient has each element's sign flipped
    with probability 0.4 per draw: one draw's gradient is nearly useless, their mean is not."""

    def _encode(self, modality, x):
        flip = torch.where(torch.rand(x.shape, device=x.device) < 0.6, 1.0, -1.0)
        return self.base.encode(modality, x.detach() + flip * (x - x.detach()), validate=False)


class Shifted(_View):
    """Call c adds 0.01 * c to the input: a draw sequence known in advance."""

    calls = 0

    def _encode(self, modality, x):
        Shifted.calls += 1
        return self.base.encode(modality, (x + 0.01 * Shifted.calls).clamp(0, 1), validate=False)


class Rounding(_View):
    """A bit-depth defense (32 levels): rounding has a zero gradient, so naive attacks stall."""

    bpda_steps = ("bit-depth",)

    def _encode(self, modality, x):
        return self.base.encode(modality, straight_through(x, lambda z: (z * 31).round() / 31), validate=False)


class Drawn(Encoder):
    """A randomized view: every call adds its own uniform noise of size ``sigma`` to the input and
    records the rows it was given (and whether they carry a gradient)."""

    def __init__(self, base: Encoder, sigma: float = 0.02, rounding: bool = False):
        super().__init__()
        self.base, self.sigma, self.rounding, self.calls = base, sigma, rounding, []
        self.name, self.modalities, self.embed_dim = base.name + "+drawn", base.modalities, base.embed_dim
        self.bpda_steps = ("bit-depth",) if rounding else ()

    def _encode(self, modality, x):
        self.calls.append((len(x), x.requires_grad))
        if self.rounding:
            x = straight_through(x, lambda z: (z * 31).round() / 31)
        noise = (torch.rand(x.shape, device=x.device) * 2 - 1) * self.sigma
        return self.base.encode(modality, (x + noise).clamp(0, 1), validate=False)

    def encode_text(self, texts):
        return self.base.encode_text(texts)


data, enc = tiny_fixtures(N)


@pytest.fixture(scope="module")
def image(enc, data):
    return predicted(enc, first_batch(data, "image", N))  # every item correct at the clean input


def accuracy(enc, b: Batch, x: torch.Tensor) -> float:
    with torch.no_grad():
        return zeroshot_correct(enc.encode(b.modality, x), enc.class_embeddings(b.prompts), b.labels).float().mean().item()


# -- EOT ----------------------------------------------------------------------------------------------
def test_eot_gradient_is_the_mean_of_per_draw_loss_gradients(enc, image):
    """Through the EOT view, each tied copy gets (1/k) sum_t grad CE(f_t(x)): not grad CE(mean_t f_t(x))."""
    b, k = image, 3
    x = b.x[:4]
    centers = enc.class_embeddings(b.prompts)

    def ce(emb, labels):
        return F.cross_entropy(100 * emb @ centers.T, labels, reduction="sum")

    tiled = x.repeat(k, 1, 1, 1).requires_grad_(True)
    Shifted.calls = 0
    emb = EOTEncoder(Shifted(enc)).encode("image", tiled)
    (g,) = torch.autograd.grad(ce(emb, b.labels[:4].repeat(k)), tiled)
    want = torch.zeros_like(x)
    for c in range(1, k + 1):
        xc = x.clone().requires_grad_(True)
        want += torch.autograd.grad(ce(enc.encode("image", (xc + 0.01 * c).clamp(0, 1)), b.labels[:4]), xc)[0] / k
    for r in range(k):
        assert torch.allclose(g[r * 4:(r + 1) * 4], want, rtol=1e-4, atol=1e-7)


def test_tie_identical_rows_forward_is_exact():
    x = torch.rand(5, 7, dtype=torch.float64)
    x = torch.cat([x, x[:2]]).requires_grad_(True)
    tied, rank = tie_identical_rows(x)
    assert torch.equal(tied, x) and rank.tolist() == [0, 0, 0, 0, 0, 1, 1]
    w = torch.arange(7.0, dtype=torch.float64)[:, None]
    (g,) = torch.autograd.grad((tied * w).sum(), x)
    assert torch.allclose(g[0], torch.full((7,), 2.5, dtype=torch.float64)) and torch.allclose(g[2], w[2].expand(7))


@pytest.mark.parametrize("attack", ["pgd", "apgd"])
def test_eot_beats_the_plain_attack_on_a_randomized_model(enc, image, attack):
    eps, noisy = 1 / 255, NoisyGradient(enc)
    inner = build_attack(attack, eps=eps, steps=5)
    torch.manual_seed(0)
    plain = accuracy(enc, image, inner(noisy, image).x)
    torch.manual_seed(0)
    adv = EOT(inner, samples=8)(noisy, image).x
    assert (adv - image.x).abs().max() <= eps + 1e-6 and adv.shape == image.x.shape
    assert accuracy(enc, image, adv) <= plain - 0.2, (accuracy(enc, image, adv), plain)


def test_eot_wrapper_contract(enc, image):
    eot = EOT(build_attack("pgd", steps=2), samples=4)
    assert eot.describe()["eot_samples"] == 4 and eot.describe()["name"] == "pgd"
    r = eot.resolve("image")
    assert isinstance(r, EOT) and r.samples == 4 and r.eps == 4 / 255
    assert isinstance(eot.with_eps(0.01), EOT) and eot.replace(steps=3).inner.steps == 3
    x0 = image.x.clone()
    out = EOT(build_attack("pgd", eps=2 / 255, steps=1), 2)(enc, image)
    assert torch.equal(image.x, x0) and out.x.shape == x0.shape and out.captions is image.captions


@pytest.mark.parametrize("samples", [0, -2, 1.5, True])
def test_eot_samples_must_be_positive(samples):
    with pytest.raises(BudgetError) as e:
        EOT(build_attack("pgd"), samples=samples)
    assert "\n" not in str(e.value)


# -- EOT with APGD: an item's k draws are one item --------------------------------------------------
def test_eot_hands_apgd_its_draws_instead_of_tiling(enc, image):
    drawn, k, steps = Drawn(enc, sigma=0.0), 3, 4
    torch.manual_seed(0)
    adv = EOT(APGD(eps=1 / 255, steps=steps), samples=k)(drawn, image).x
    grads = [rows for rows, g in drawn.calls if g]
    assert adv.shape == image.x.shape and (adv - image.x).abs().max() <= 1 / 255 + 1e-6
    assert len(grads) == k * (steps + 1) and set(grads) == {N}  # k draws of the untiled batch per iterate
    assert [rows for rows, g in drawn.calls if not g][:k] == [N] * k  # the clean input's k draws


@pytest.mark.determinism
def test_a_noise_free_model_gives_the_single_draw_result(enc, image):
    one = APGD(eps=2 / 255, steps=5)(enc, image).x
    three = APGD(eps=2 / 255, steps=5, eot_samples=3)(enc, image).x
    torch.testing.assert_close(one, three, **NUMERIC_TOLERANCE)  # three draws summed: another reduction


def test_eot_apgd_breaks_a_randomized_model_at_least_as_well_as_one_draw(enc, image):
    drawn = Drawn(enc, sigma=0.05)
    centers = enc.class_embeddings(image.prompts)

    def accuracy(x, draws=8):
        torch.manual_seed(123)
        with torch.no_grad():
            return sum(zeroshot_correct(drawn.encode("image", x), centers, image.labels).float().mean().item()
                       for _ in range(draws)) / draws

    torch.manual_seed(0)
    plain = accuracy(APGD(eps=2 / 255, steps=6)(drawn, image).x)
    torch.manual_seed(0)
    eot = accuracy(EOT(APGD(eps=2 / 255, steps=6), samples=8)(drawn, image).x)
    assert eot <= plain and eot < accuracy(image.x), (eot, plain)


def test_bpda_inside_eot_reaches_apgd(enc, image):
    drawn = Drawn(enc, sigma=0.01, rounding=True)
    atk = EOT(BPDA(APGD(eps=8 / 255, steps=3)), samples=2)
    assert isinstance(atk.inner, BPDA) and atk.describe()["eot_samples"] == 2 and atk.describe()["bpda"] is True
    torch.manual_seed(0)
    out = atk(drawn, image).x
    assert (out - image.x).abs().max() > 1 / 255  # the identity stand-in gives BPDA a gradient


def test_apgd_eot_samples_settings_and_records():
    assert "eot_samples" not in APGD().describe()
    assert build_attack("apgd", eot_samples=4).describe()["eot_samples"] == 4
    with pytest.raises(BudgetError) as e:
        APGD(eot_samples=0)
    assert "\n" not in str(e.value)


# -- BPDA ---------------------------------------------------------------------------------------------
def test_straight_through_forward_and_backward():
    x = torch.linspace(0, 1, 11).requires_grad_(True)
    q = lambda z: (z * 4).round() / 4  # noqa: E731
    y = straight_through(x, q)
    assert torch.equal(y, q(x.detach())) and not bpda_enabled()
    assert torch.equal(torch.autograd.grad(y.sum(), x)[0], torch.zeros(11))  # rounding: no signal
    y = straight_through(x, lambda z: torch.from_numpy(z.detach().numpy().round()))
    assert torch.equal(torch.autograd.grad(y.sum(), x)[0], torch.zeros(11))  # out of the graph: zero, no error
    with bpda():
        assert bpda_enabled()
        y = straight_through(x, q)
        assert torch.equal(y, q(x.detach()))
        assert torch.equal(torch.autograd.grad(y.sum(), x)[0], torch.ones(11))  # identity stand-in
        y = straight_through(x, q, backward_fn=lambda z: 3 * z)
        assert torch.equal(torch.autograd.grad(y.sum(), x)[0], torch.full((11,), 3.0))
        with pytest.raises(RobustMMError):
            straight_through(x, q, backward_fn=lambda z: z[:3])
    assert not bpda_enabled()


def test_bpda_context_restores_after_an_error():
    with pytest.raises(KeyError):
        with bpda():
            raise KeyError("x")
    assert not bpda_enabled()


def test_bpda_beats_the_naive_attack_on_rounding(enc, image):
    defended, eps = Rounding(enc), 8 / 255
    pgd = build_attack("pgd", eps=eps, steps=5)
    naive = accuracy(defended, image, pgd(defended, image).x)
    adaptive = accuracy(defended, image, BPDA(pgd)(defended, image).x)
    assert adaptive <= naive - 0.3, (adaptive, naive)
    assert BPDA(pgd).describe()["bpda"] is True and isinstance(BPDA(pgd).with_eps(0.1), BPDA)


def test_bpda_composes_with_eot(enc, image):
    defended, eps = Rounding(enc), 8 / 255
    assert declared(EOTEncoder(defended), "bpda_steps") == ("bit-depth",)
    naive = accuracy(defended, image, build_attack("pgd", eps=eps, steps=3)(defended, image).x)
    both = EOT(BPDA(build_attack("pgd", eps=eps, steps=3)), samples=2)(defended, image).x
    assert accuracy(defended, image, both) < naive


def test_bpda_on_an_encoder_with_nothing_to_approximate(enc, image):
    with pytest.raises(RobustMMError, match="declares no non-differentiable step") as e:
        BPDA(build_attack("pgd", steps=1))(enc, image)
    assert "\n" not in str(e.value)


@pytest.mark.determinism
def test_tiled_copies_are_one_item_for_label_free_scores(enc, image):
    """EOT's copies share a dataset index: their captions count as the item's own, so the X->text
    margin of a tiled batch is the untiled one (no copy competes with itself)."""
    from robustmm.attacks.margin_losses import Scorer

    b = image.replace(labels=None, prompts=None)
    k, rows = 3, torch.arange(N)
    tiled = Batch("image", b.x.repeat(k, 1, 1, 1), list(b.captions) * k, None, None, b.index.repeat(k))
    with torch.no_grad():
        emb = enc.encode("image", b.x)
        one = Scorer.of(enc, b, 100.0, b.x.device).caption_margin(emb, rows)
        many = Scorer.of(enc, tiled, 100.0, b.x.device).caption_margin(emb.repeat(k, 1), torch.arange(k * N))
    torch.testing.assert_close(many, one.repeat(k), **NUMERIC_TOLERANCE)  # a tiled batch: other matmul shapes
