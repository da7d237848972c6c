"""seeded(): library code draws reproducibly without changing the caller's random state.

evaluate, robustness_curve and example_figures seed torch's global generators for their own draws
(randomized defenses, attacks without a generator) inside :func:`robustmm.seeding.seeded`; the
caller's next draw is the one it would have made without the call.
"""
import torch

from robustmm.attacks.base import build_attack
from robustmm.encoders.input_transforms import defend
from robustmm.evaluation import evaluate, robustness_curve
from robustmm.job.example_attacks import example_figures
from robustmm.seeding import seeded


def test_seeded_draws_from_the_seed_and_restores_the_callers_state():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    with seeded(7):
        inside = torch.rand(4)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(7)
    assert torch.equal(inside, torch.rand(4))


def test_seeded_restores_the_state_when_the_block_raises():
    before = torch.get_rng_state()
    try:
        with seeded(1):
            torch.rand(3)
            raise ValueError("boom")
    except ValueError:
        pass
    assert torch.equal(torch.get_rng_state(), before)


def test_evaluate_leaves_the_callers_rng_state_unchanged(rand_encoder, synth_small, one_thread):
    randomized = defend(rand_encoder, "random-resize-pad")  # draws from the global generator
    data = synth_small.head(8)
    torch.manual_seed(11)
    before = torch.get_rng_state()
    first = evaluate(randomized, data, modality="image", attack=build_attack("pgd", steps=1), seed=3, progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(99)  # another caller state: the same numbers (the seed alone decides them)
    second = evaluate(randomized, data, modality="image", attack=build_attack("pgd", steps=1), seed=3, progress=False)
    assert first.metrics == second.metrics


def test_robustness_curve_leaves_the_callers_rng_state_unchanged(rand_encoder, synth_small, one_thread):
    randomized = defend(rand_encoder, "random-resize-pad")
    data = synth_small.head(8)
    before = torch.get_rng_state()
    robustness_curve(randomized, data, modality="image", attack=build_attack("pgd", steps=1), eps_grid=[1 / 255, 2 / 255],
                     seed=5, progress=False)
    assert torch.equal(torch.get_rng_state(), before)


def test_example_figures_leave_the_callers_rng_state_unchanged(rand_encoder, synth_small, one_thread, tmp_path):
    before = torch.get_rng_state()
    example_figures(rand_encoder, synth_small.head(2), tmp_path, n_images=2, steps=1, modalities=("audio",))
    assert torch.equal(torch.get_rng_state(), before)
