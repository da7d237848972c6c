"""Contract tests over the registries: every registered attack, encoder family and dataset.

The parametrizations are computed at collection time from ``robustmm.list_attacks()``,
``robustmm.list_encoders()`` and ``robustmm.list_datasets()``, so a new entry gets every check
here with no edit (attacks), or fails until it gets an entry in the builder tables below
(encoder families and datasets need a tiny offline instance, which only their author knows how
to make). The toy attack of tests/_toy_attack.py (imported by conftest.py) is registered before
collection and goes through the same checks.

Attacks (per attack x continuous modality, on a small random-init TinyBind, 6 items, 2 steps):
the output has the input's shape, dtype and device and lies inside the modality's domain and the
attack's eps-ball (its norm); eps = 0 changes nothing; the input batch is never mutated; the
encoder's weights, buffers, train/eval modes, ``requires_grad`` flags and ``.grad`` are exactly as
they were, from an odd mixed state; the same settings and seed give the same output.
"""
from __future__ import annotations

import copy
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _fixtures as fx
import pytest
import torch
from _tiny import tiny_tinybind
from _toy_attack import TOY_NAME

import robustmm
from robustmm.attacks.base import accepts, attack_class
from robustmm.data.synthscenes import synthscenes
from robustmm.encoders.base import NUMERIC_TOLERANCE
from robustmm.errors import RobustMMError
from robustmm.evaluation import iter_batches
from robustmm.modalities import CONTINUOUS_MODALITIES, get_modality

pytestmark = pytest.mark.usefixtures("one_thread")

HERE = "tests/test_contracts.py"
N = 6  # items per attacked batch
CAPTIONS = 2  # captions per item (text embedding dominates the cost of caption attacks)

# -- attacks ------------------------------------------------------------------------------------
ATTACKS = sorted(robustmm.list_attacks())

#: small word list for attacks that build a substitute vocabulary (the built-in one costs seconds)
SMALL_VOCAB = ["red", "blue", "green", "yellow", "purple", "circle", "square", "star", "ring", "triangle",
               "tiny", "huge", "large", "small", "left", "right", "scene", "photo", "bright", "dark"]

#: cheap values for the knobs that set an attack's cost; an attack taking one of them gets it
CHEAP: dict[str, Any] = {
    "steps": 2, "target_steps": 2, "n_queries": 20, "n_iter": 2, "iterations": 2, "restarts": 1, "n_restarts": 1,
    "epochs": 1, "batch_size": 4, "eot_samples": 2, "eot_iter": 2, "n_samples": 2, "samples": 2,
    "k": 3, "pool": 4, "n_attributes": 2, "vocabulary": SMALL_VOCAB,
}

#: attacks checked on fewer modalities than they support, and why
MODALITY_LIMITS: dict[str, tuple[str, ...]] = {
    # the bridge is checked on every modality against robustmm's PGD in test_torchattacks_bridge.py
    "torchattacks": ("image",),
}

#: extra constructor keywords an attack needs that cannot be derived (e.g. a wrapped attack);
#: an attack whose construction fails without one gets a failure saying to add it here
EXTRA_KWARGS: dict[str, dict[str, Any]] = {}


def _named_params(name: str) -> tuple[set[str], bool]:
    """The attack's explicit constructor keywords, and whether it also takes ``**kwargs``."""
    params = inspect.signature(attack_class(name).__init__).parameters
    named = {k for k, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {"self"}
    return named, any(p.kind is p.VAR_KEYWORD for p in params.values())


def cheap_kwargs(name: str, modality: str) -> dict[str, Any]:
    """Cheap settings for attack ``name`` on ``modality``, derived from its constructor.

    Named keywords get their :data:`CHEAP` value; an attack that takes ``**kwargs`` (the
    torchattacks bridge) is probed one keyword at a time and keeps those it accepts. An attack
    taking ``modality`` (the patch) is built for the modality under test.
    """
    named, open_kwargs = _named_params(name)
    kw: dict[str, Any] = dict(EXTRA_KWARGS.get(name, {}))
    if "modality" in named:
        kw["modality"] = modality
    for key, value in CHEAP.items():
        if key in kw:
            continue
        if key in named:
            kw[key] = value
        elif open_kwargs and accepts(name, key):
            try:
                robustmm.build_attack(name, **kw, **{key: value})
            except (RobustMMError, TypeError):
                continue
            kw[key] = value
    return kw


def has_eps(name: str) -> bool:
    named, _ = _named_params(name)
    return "eps" in named


@dataclass
class AttackRun:
    """One attack call from an odd encoder state, and what was recorded around it."""

    attack: Any
    kwargs: dict[str, Any]
    batch: Any
    out: Any
    snapshot: dict[str, Any]
    state_before: dict[str, Any]
    state_after: dict[str, Any]


def _snapshot(batch) -> dict[str, Any]:
    return {
        "x": batch.x.detach().clone(), "captions": copy.deepcopy(batch.captions),
        "labels": None if batch.labels is None else batch.labels.clone(),
        "prompts": copy.deepcopy(batch.prompts), "index": None if batch.index is None else batch.index.clone(),
    }


def encoder_state(enc) -> dict[str, Any]:
    return {
        "tensors": {k: v.detach().clone() for k, v in enc.state_dict().items()},
        "modes": {n: m.training for n, m in enc.named_modules()},
        "flags": {n: p.requires_grad for n, p in enc.named_parameters()},
        "grads": {n: p.grad is not None for n, p in enc.named_parameters()},
    }


def _odd_state(enc, modality: str) -> None:
    """Train mode everywhere except one other tower, every other parameter trainable: an attack that
    forgets eval mode moves BatchNorm statistics, one that sets flags wholesale is caught."""
    enc.train()
    other = next(m for m in enc.modalities if m != modality)
    enc.tower(other).eval()
    for i, p in enumerate(enc.parameters()):
        p.requires_grad_(i % 2 == 0)


class Attacks:
    """Builds, fits and runs attacks once per (attack, modality, variant); tests share the runs."""

    def __init__(self, enc, data, train):
        self.enc, self.data, self.train = enc, data, train
        self.runs: dict[tuple[str, str], AttackRun | str] = {}

    def batch(self, modality: str):
        task = self.data.tasks.get(modality)
        b = next(iter_batches(self.data, modality, N, task.prompts() if task is not None else None))
        return b.replace(captions=[list(c[:CAPTIONS]) for c in b.captions])

    def build(self, name: str, modality: str, **changes: Any):
        """The attack built with cheap settings (+ ``changes``), fitted when it needs a fit;
        a RobustMMError here or at call time means the attack rejects the modality."""
        kw = cheap_kwargs(name, modality) | changes
        try:
            attack = robustmm.build_attack(name, **kw)
        except TypeError as e:
            pytest.fail(f"attack {name!r} cannot be built from {sorted(kw)} ({e}); add the keywords it needs "
                        f"to EXTRA_KWARGS[{name!r}] in {HERE}")
        if attack.needs_fit or attack.fit_split is not None:
            attack.fit(self.enc, self.train)
        return attack, kw

    def run(self, name: str, modality: str) -> AttackRun:
        key = (name, modality)
        if key not in self.runs:
            self.runs[key] = self._run(name, modality)
        run = self.runs[key]
        if isinstance(run, str):
            pytest.skip(run)
        return run

    def _run(self, name: str, modality: str) -> AttackRun | str:
        limit = MODALITY_LIMITS.get(name)
        if limit is not None and modality not in limit:
            return f"{name} is checked on {', '.join(limit)} only here (see MODALITY_LIMITS)"
        batch = self.batch(modality)
        snap = _snapshot(batch)
        try:
            _odd_state(self.enc, modality)  # before the fit too: fitting must leave the encoder alone as well
            before = encoder_state(self.enc) | {"rng": torch.get_rng_state()}
            attack, kw = self.build(name, modality)
            out = attack(self.enc, batch)
            after = encoder_state(self.enc) | {"rng": torch.get_rng_state()}
        except RobustMMError as e:
            return f"{name} rejects {modality}: {type(e).__name__}: {e}"
        finally:
            self.enc.freeze()
        return AttackRun(attack, kw, batch, out, snap, before, after)


@pytest.fixture(scope="module")
def contract_data():
    return synthscenes(N, seed=2, split="test")


@pytest.fixture(scope="module")
def attacks(contract_data, one_thread):
    enc = tiny_tinybind(contract_data)
    return Attacks(enc, contract_data, synthscenes(8, seed=0, split="train"))


ATTACK_CASES = [pytest.param(a, m, id=f"{a}-{m}") for a in ATTACKS for m in CONTINUOUS_MODALITIES]


def perturbs_x(attack) -> bool:
    return "x" in attack.perturbs


def budget(run: AttackRun, modality: str) -> tuple[float, str]:
    """(eps, norm) the attack promises on ``modality``: ``resolve(modality)``'s eps and norm
    settings, the modality's defaults where the attack leaves them open."""
    spec = get_modality(modality)
    resolved = run.attack.resolve(modality)
    eps = resolved.eps if resolved.eps is not None else spec.middle_eps
    norm = getattr(resolved, "norm", None) or resolved.settings().get("norm") or spec.norm
    norm = {"inf": "linf", "l_inf": "linf", "l-inf": "linf", "l_2": "l2"}.get(str(norm).lower(), str(norm).lower())
    assert norm in ("linf", "l2"), f"{run.attack.name}: unknown norm {norm!r}"
    return float(eps), norm


@pytest.mark.parametrize("name, modality", ATTACK_CASES)
def test_attack_output_shape_dtype_device(attacks, name, modality):
    run = attacks.run(name, modality)
    out, x = run.out, run.snapshot["x"]
    assert out.modality == modality
    assert out.x.shape == x.shape and out.x.dtype == x.dtype and out.x.device == x.device
    assert not out.x.requires_grad, "the adversarial batch must be detached"
    assert len(out.captions) == len(x)
    assert [len(c) for c in out.captions] == [len(c) for c in run.snapshot["captions"]]
    assert all(isinstance(c, str) and c.strip() for caps in out.captions for c in caps)
    if out.labels is not None:
        assert torch.equal(out.labels, run.snapshot["labels"])
    if out.index is not None:
        assert torch.equal(out.index, run.snapshot["index"])


@pytest.mark.parametrize("name, modality", ATTACK_CASES)
def test_attack_output_in_domain(attacks, name, modality):
    run = attacks.run(name, modality)
    lo, hi = get_modality(modality).domain
    x = run.out.x
    assert torch.isfinite(x).all()
    assert float(x.min()) >= lo and float(x.max()) <= hi, (float(x.min()), float(x.max()))


@pytest.mark.parametrize("name, modality", ATTACK_CASES)
def test_attack_within_budget(attacks, name, modality):
    run = attacks.run(name, modality)
    x, adv = run.snapshot["x"], run.out.x
    if not perturbs_x(run.attack):
        assert torch.equal(adv, x), f"{name} perturbs only {run.attack.perturbs} but changed x"
        return
    if not has_eps(name):
        pytest.skip(f"{name} has no eps budget (its budget is not an eps-ball)")
    eps, norm = budget(run, modality)
    d = (adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert (size <= eps * (1 + 1e-5) + 1e-6).all(), f"{norm} sizes {size.tolist()} > eps {eps}"


#: library bugs the contract tests found (strict xfail: fixing the bug turns the case into a failure
#: until its entry here is removed)
RESOLVE_BUGS: dict[str, str] = {}  # e.g. "torchattacks": "<what is wrong, file, line>"


@pytest.mark.parametrize("name", [
    pytest.param(a, marks=pytest.mark.xfail(strict=True, reason=RESOLVE_BUGS[a])) if a in RESOLVE_BUGS else a
    for a in ATTACKS
])
def test_attack_resolve_names_a_concrete_budget(name):
    """``resolve(modality)`` fills the modality's defaults, so result records name the eps used."""
    if not has_eps(name):
        pytest.skip(f"{name} has no eps budget")
    modality = "image"
    attack = robustmm.build_attack(name, **cheap_kwargs(name, modality))
    resolved = attack.resolve(modality)
    assert resolved.eps is not None, f"{name}.resolve({modality!r}).eps is None"
    assert resolved.describe().get("eps") == pytest.approx(resolved.eps)


@pytest.mark.parametrize("name, modality", ATTACK_CASES)
def test_attack_eps_zero_is_a_noop(attacks, name, modality):
    run = attacks.run(name, modality)
    if not has_eps(name):
        pytest.skip(f"{name} has no eps budget")
    zero, _ = attacks.build(name, modality, eps=0.0)
    out = zero(attacks.enc, run.batch)
    assert torch.equal(out.x, run.snapshot["x"])


@pytest.mark.parametrize("name, modality", ATTACK_CASES)
def test_attack_never_mutates_its_input(attacks, name, modality):
    run = attacks.run(name, modality)
    b, snap = run.batch, run.snapshot
    assert torch.equal(b.x, snap["x"]) and b.captions == snap["captions"] and b.prompts == snap["prompts"]
    assert (b.labels is None) == (snap["labels"] is None) and (b.labels is None or torch.equal(b.labels, snap["labels"]))
    assert (b.index is None) == (snap["index"] is None) and (b.index is None or torch.equal(b.index, snap["index"]))


@pytest.mark.parametrize("name, modality", ATTACK_CASES)
def test_attack_leaves_the_encoder_as_it_was(attacks, name, modality):
    run = attacks.run(name, modality)
    before, after = run.state_before, run.state_after
    changed = [k for k, v in before["tensors"].items() if not torch.equal(v, after["tensors"][k])]
    assert not changed, f"weights or buffers changed: {changed[:5]}"
    assert after["modes"] == before["modes"], "train/eval modes not restored"
    assert after["flags"] == before["flags"], "requires_grad flags not restored"
    assert not any(after["grads"].values()), "parameters got .grad"


@pytest.mark.parametrize("name, modality", ATTACK_CASES)
def test_attack_leaves_the_global_rng_alone(attacks, name, modality):
    """Building, fitting and calling an attack does not move the caller's global torch RNG."""
    run = attacks.run(name, modality)
    assert torch.equal(run.state_before["rng"], run.state_after["rng"])


@pytest.mark.parametrize("name, modality", ATTACK_CASES)
def test_attack_same_seed_same_output(attacks, name, modality):
    """A fresh attack with the same settings (fitted again if it learns) gives the same output,
    whatever the global RNG state: its randomness comes from its own seed."""
    run = attacks.run(name, modality)
    again, _ = attacks.build(name, modality)
    torch.rand(17)  # move the global RNG on
    out = again(attacks.enc, run.batch)
    assert torch.equal(out.x, run.out.x), "same settings and seed, different x (global RNG? train/eval mode?)"
    assert out.captions == run.out.captions


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_runs_on_some_modality(attacks, name):
    """Every attack runs on at least one continuous modality (no attack is skipped everywhere)."""
    reasons = []
    for modality in CONTINUOUS_MODALITIES:
        try:
            attacks.run(name, modality)
            return
        except pytest.skip.Exception as e:
            reasons.append(str(e))
    pytest.fail(f"{name} ran on no continuous modality: {reasons}")


@pytest.mark.parametrize("name", ATTACKS)
def test_evaluate_with_the_attack_leaves_the_encoder_as_it_was(attacks, name):
    """Through robustmm.evaluate (clean pass, attack, scoring) on a modality the attack runs on."""
    modality = next((m for m in CONTINUOUS_MODALITIES if isinstance(attacks.runs.get((name, m)), AttackRun)), None)
    if modality is None:
        test_attack_runs_on_some_modality(attacks, name)
        modality = next(m for m in CONTINUOUS_MODALITIES if isinstance(attacks.runs.get((name, m)), AttackRun))
    attack, _ = attacks.build(name, modality)
    before = encoder_state(attacks.enc)
    res = robustmm.evaluate(attacks.enc, attacks.data, modality=modality, attack=attack, progress=False)
    after = encoder_state(attacks.enc)
    assert res.attack["name"] == name and res.metrics["attacked"] is not None
    assert all(torch.equal(v, after["tensors"][k]) for k, v in before["tensors"].items())
    assert after["modes"] == before["modes"] and after["flags"] == before["flags"]
    assert not any(after["grads"].values())


def test_toy_attack_is_registered_and_contract_checked():
    assert TOY_NAME in robustmm.list_attacks() and TOY_NAME in ATTACKS
    assert {p.values[1] for p in ATTACK_CASES if p.values[0] == TOY_NAME} == set(CONTINUOUS_MODALITIES)


def test_toy_attack_through_evaluate(attacks, contract_data):
    res = robustmm.evaluate(attacks.enc, contract_data, modality="audio", attack=robustmm.build_attack(TOY_NAME),
                            progress=False)
    assert res.attack["name"] == TOY_NAME
    assert res.attack["eps"] == pytest.approx(get_modality("audio").middle_eps)  # resolved before the run
    assert res.threat == "white-box" and res.n == len(contract_data)
    clean, attacked = res.metrics["clean"], res.metrics["attacked"]
    assert attacked is not None and set(attacked) == set(clean)
    assert all(0.0 <= v <= 1.0 for v in attacked.values())
    assert res.metrics["asr"] is None or 0.0 <= res.metrics["asr"] <= 1.0


# -- encoders ------------------------------------------------------------------------------------
FAMILIES = sorted(robustmm.list_encoders())


def _tinybind(name: str):
    return lambda tmp: robustmm.load_encoder(name)


def _open_clip(tmp: Path):
    pytest.importorskip("open_clip")
    return robustmm.load_encoder(f"open_clip:{fx.tiny_open_clip_arch(tmp)}@none")


def _hf(tmp: Path):
    pytest.importorskip("transformers")
    return robustmm.load_encoder(f"hf:{fx.save_tiny_hf_clip(tmp / 'hf')}")


def _languagebind(tmp: Path):
    from _bind_tiny import write_languagebind

    mods = ("image", "video", "audio", "depth", "thermal")
    for i, m in enumerate(mods):
        write_languagebind(tmp / f"LanguageBind_{m}", m, seed=i)
    return robustmm.load_encoder("languagebind:" + ",".join(f"{m}={tmp}/LanguageBind_{m}" for m in mods))


def _imagebind(tmp: Path):
    from _bind_tiny import write_imagebind

    path = tmp / "imagebind_tiny.pth"
    write_imagebind(path)
    return robustmm.load_encoder(f"imagebind:{path}")


#: family -> how to build a tiny offline instance through the registry (argument: an empty folder)
ENCODER_BUILDERS = {
    "tinybind": _tinybind("tinybind"),
    "tinybind-alt": _tinybind("tinybind-alt"),
    "open_clip": _open_clip,
    "hf": _hf,
    "languagebind": _languagebind,
    "imagebind": _imagebind,
}


def _missing_family(family: str) -> str:
    return (f"encoder family {family!r} is registered but has no entry in ENCODER_BUILDERS ({HERE}): add "
            f"'{family}': lambda tmp: robustmm.load_encoder('{family}:<a tiny random-init or bundled spec>'), "
            f"building an instance offline in seconds (write any files it needs under tmp)")


def test_every_encoder_family_has_a_builder():
    missing = [f for f in FAMILIES if f not in ENCODER_BUILDERS]
    assert not missing, "; ".join(_missing_family(f) for f in missing)


def _built_once(builders: dict[str, Any], missing: Any, tmp_path_factory) -> Any:
    """``get(name)``: ``builders[name]`` called once on a fresh folder, its result kept for the module;
    a name with no builder fails the test with ``missing(name)`` (how to add one)."""
    cache: dict[str, Any] = {}

    def get(name: str):
        if name not in builders:
            pytest.fail(missing(name))
        if name not in cache:
            cache[name] = builders[name](tmp_path_factory.mktemp(name.replace(":", "_")))
        return cache[name]

    return get


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    return _built_once(ENCODER_BUILDERS, _missing_family, tmp_path_factory)


@pytest.fixture(scope="module")
def raw_inputs():
    """Three SynthScenes items in every modality: valid raw inputs for any encoder."""
    return synthscenes(3, seed=5, split="test")


ENCODER_CASES = [pytest.param(f, m, id=f"{f}-{m}") for f in FAMILIES for m in CONTINUOUS_MODALITIES]


@pytest.mark.parametrize("family", FAMILIES)
def test_encoder_is_frozen_and_describes_itself(encoders, family):
    check_frozen_and_described(encoders(family))


def check_frozen_and_described(enc) -> None:
    """The Encoder contract's static part: frozen, eval mode, sane sizes, a JSON-ready ``info()``."""
    assert isinstance(enc, robustmm.Encoder)
    assert not enc.training and not any(m.training for m in enc.modules())
    assert not any(p.requires_grad for p in enc.parameters())
    assert enc.embed_dim > 0 and enc.modalities and set(enc.modalities) <= set(CONTINUOUS_MODALITIES)
    info = enc.info()
    assert info["name"] and json.loads(json.dumps(info)) == info


@pytest.mark.determinism
@pytest.mark.parametrize("family, modality", ENCODER_CASES)
def test_encoder_embeddings_unit_norm_differentiable(encoders, raw_inputs, family, modality):
    enc = encoders(family)
    if modality not in enc.modalities:
        pytest.skip(f"{family} does not embed {modality}")
    check_embeddings(enc, raw_inputs, modality)


def check_embeddings(enc, raw_inputs, modality: str, batch_independent: bool = True) -> None:
    """``encode``: (3, D) float32, finite, unit norm, a non-zero gradient on the raw input and none on
    the weights; in eval mode an item's embedding does not depend on the rest of its batch."""
    x = raw_inputs.get(modality, torch.arange(3)).clone().requires_grad_(True)
    z = enc.encode(modality, x)
    assert z.shape == (3, enc.embed_dim) and z.dtype == torch.float32
    assert torch.isfinite(z).all()
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3), atol=1e-4, rtol=0)
    target = torch.nn.functional.normalize(torch.randn(3, enc.embed_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    (z * target).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0, "no gradient reaches the raw input"
    assert not any(p.grad is not None for p in enc.parameters())
    if batch_independent:
        with torch.no_grad():  # eval mode: an item's embedding does not depend on the rest of its batch
            torch.testing.assert_close(enc.encode(modality, x[:1].detach()), z[:1].detach(), **NUMERIC_TOLERANCE)


@pytest.mark.determinism
@pytest.mark.parametrize("family", FAMILIES)
def test_encoder_text_tower(encoders, family):
    check_text_tower(encoders(family))


def check_text_tower(enc) -> None:
    """``encode_text``: (N, D), finite, unit norm, distinct texts apart, independent of the batch."""
    texts = ["a large red circle.", "two tiny blue squares next to a star", "a photo of a cat."]
    t = enc.encode_text(texts)
    assert t.shape == (3, enc.embed_dim) and torch.isfinite(t).all()
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(3), atol=1e-4, rtol=0)
    assert not torch.allclose(t[0], t[1])
    torch.testing.assert_close(enc.encode_text(texts[1:2])[0], t[1], **NUMERIC_TOLERANCE)  # alone vs in a batch


# -- datasets ------------------------------------------------------------------------------------
DATASETS = sorted(robustmm.list_datasets())


def _cifar10(tmp: Path):
    fx.write_cifar10(tmp, n=12)
    return robustmm.load_dataset("cifar10", root=str(tmp)), 12


def _cifar100(tmp: Path):
    fx.write_cifar100(tmp)
    return robustmm.load_dataset("cifar100", root=str(tmp)), 6


def _coco(tmp: Path):
    return robustmm.load_dataset("coco", root=str(fx.write_coco(tmp)), image_size=24), 2


def _flickr30k(tmp: Path):
    images = fx.write_flickr30k(tmp)
    return robustmm.load_dataset("flickr30k", root=str(tmp), image_root=str(images), image_size=24), 2


def _bind_dataset(name: str, writer: str, n: int, **kwargs: Any):
    """A Bind benchmark loader on the fixture files tests/_bind_data.py writes."""

    def build(tmp: Path):
        import _bind_data

        getattr(_bind_data, writer)(tmp)
        return robustmm.load_dataset(name, root=str(tmp), **kwargs), n

    return build


def _user_dataset(name: str, writer: str, n: int, **options: Any):
    """A user-data loader on a fixture folder written by tests/_user_data.py (``writer``)."""

    def build(tmp: Path):
        import _user_data

        return robustmm.load_dataset(f"{name}:{getattr(_user_data, writer)(tmp)}", **options), n

    return build


#: dataset -> how to load a tiny instance through the registry (argument: an empty folder);
#: returns the dataset and the number of items it must have
DATASET_BUILDERS = {
    "synthscenes": lambda tmp: (robustmm.load_dataset("synthscenes", split="test", n=8), 8),
    "cifar10": _cifar10,
    "cifar100": _cifar100,
    "coco": _coco,
    "flickr30k": _flickr30k,
    "esc50": _bind_dataset("esc50", "write_esc50", 10),
    "msrvtt": _bind_dataset("msrvtt", "write_msrvtt", 6, num_frames=3, image_size=24),
    "nyu_depth_v2": _bind_dataset("nyu_depth_v2", "write_nyu", 6, image_size=24),
    "llvip": _bind_dataset("llvip", "write_llvip", 6, image_size=16),
    # the user-data loaders, on the fixture folders tests/_user_data.py writes
    "imagefolder": _user_dataset("imagefolder", "image_folder", 9, size=16),
    "audiofolder": _user_dataset("audiofolder", "audio_folder", 6),
    "videofolder": _user_dataset("videofolder", "video_folder", 4, size=16, frames=2),
    "depthfolder": _user_dataset("depthfolder", "gray16_folder", 4, size=8),
    "thermalfolder": _user_dataset("thermalfolder", "gray16_folder", 4, size=8),
    "pointcloudfolder": _user_dataset("pointcloudfolder", "point_folder", 6, points=64),
    "folder": _user_dataset("folder", "audio_folder", 6, modality="audio"),
    "manifest": _user_dataset("manifest", "jsonl_manifest", 9, size=16),
    "hf": _user_dataset("hf", "hf_dataset", 9, size=16),
    "wds": _user_dataset("wds", "wds_shard", 9, size=16),
    "imagenet": _user_dataset("imagenet", "imagenet_val", 6, size=16),
    "modelnet40": _user_dataset("modelnet40", "modelnet_resampled", 6, points=64),
}


def _missing_dataset(name: str) -> str:
    return (f"dataset {name!r} is registered but has no entry in DATASET_BUILDERS ({HERE}): add "
            f"'{name}': lambda tmp: (robustmm.load_dataset('{name}', root=<fixture files written under tmp, "
            f"e.g. by a writer in tests/_fixtures.py>), <its number of items>)")


def test_every_dataset_has_a_builder():
    missing = [d for d in DATASETS if d not in DATASET_BUILDERS]
    assert not missing, "; ".join(_missing_dataset(d) for d in missing)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    return _built_once(DATASET_BUILDERS, _missing_dataset, tmp_path_factory)


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_size_captions_and_info(datasets, name):
    ds, n = datasets(name)
    assert isinstance(ds, robustmm.MultimodalDataset)
    assert len(ds) == n and len(ds.captions) == n
    for caps in ds.captions:
        assert isinstance(caps, list) and caps, "every item has at least one caption"
        assert all(isinstance(c, str) and c.strip() for c in caps)
    info = ds.info()
    assert info["name"] == ds.name and info["split"] == ds.split and info["size"] == n
    json.dumps(info)
    assert ds.modalities and set(ds.modalities) <= set(CONTINUOUS_MODALITIES)
    if ds.attributes is not None:
        assert len(ds.attributes) == n


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_items_match_their_modality_spec(datasets, name):
    ds, n = datasets(name)
    idx = torch.tensor([n - 1, 0])
    for modality in ds.modalities:
        spec = get_modality(modality)
        x = ds.get(modality, idx)
        spec.validate(x)  # shape, floating dtype, finite, inside the domain
        assert x.shape[0] == 2 and x.dtype == torch.float32
        torch.testing.assert_close(ds.get(modality, [0]), x[1:])  # a list index, same item
        assert ds.get(modality, slice(None)).shape == (n, *x.shape[1:])  # items share one shape


#: datasets whose standard class names repeat (open_clip's ImageNet names: two "crane", two "maillot")
SHARED_CLASSNAMES = {"imagenet"}


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_zero_shot_tasks(datasets, name):
    ds, n = datasets(name)
    for modality, task in ds.tasks.items():
        assert modality in ds.modalities
        assert ds.task(modality) is task
        assert task.labels.shape == (n,) and task.labels.dtype == torch.int64
        assert 0 <= int(task.labels.min()) and int(task.labels.max()) < len(task.classnames)
        if name not in SHARED_CLASSNAMES:
            assert len(set(task.classnames)) == len(task.classnames), "class names are unique"
        assert task.templates and all("{}" in t for t in task.templates)
        prompts = task.prompts()
        assert len(prompts) == len(task.classnames)
        assert all(len(p) == len(task.templates) and all(isinstance(s, str) and s.strip() for s in p) for p in prompts)
        assert all(c in p[0] for c, p in zip(task.classnames, prompts))


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_head_and_subset(datasets, name):
    ds, n = datasets(name)
    head = ds.head(2)
    assert len(head) == 2 and head.captions == ds.captions[:2] and len(ds.head(n + 5)) == n
    pick = [n - 1, 0]
    sub = ds.subset(pick)
    assert len(sub) == 2 and sub.captions == [ds.captions[i] for i in pick] and sub.name == ds.name
    for modality in ds.modalities:
        torch.testing.assert_close(sub.get(modality, [0, 1]), ds.get(modality, pick))
        torch.testing.assert_close(head.get(modality, [1]), ds.get(modality, [1]))
    for modality, task in ds.tasks.items():
        assert sub.task(modality).labels.tolist() == [int(task.labels[i]) for i in pick]
        assert sub.task(modality).classnames == task.classnames
    if ds.attributes is not None:
        assert sub.attributes == [ds.attributes[i] for i in pick]
    nested = sub.subset([1])  # a subset of a subset still maps to the right item
    assert nested.captions == [ds.captions[0]]
    for modality in ds.modalities:
        torch.testing.assert_close(nested.get(modality, [0]), ds.get(modality, [0]))


# -- defenses ------------------------------------------------------------------------------------
# Every defense family is an Encoder and meets the encoder contract above. Trained families are
# trained for a step on a handful of items (the contract is about the wrapper, not its quality).
DEFENSES = sorted(robustmm.list_defenses())


def _trained(name: str, **settings: Any):
    def build(base, train):
        return robustmm.defend(base, name, data=train, **settings)

    return build


#: defense family -> how to build a tiny instance offline: ``f(base encoder, 8 training items)``
DEFENSE_BUILDERS = {
    "bit-depth": lambda base, train: robustmm.defend(base, "bit-depth", bits=3),
    "jpeg": lambda base, train: robustmm.defend(base, "jpeg", quality=50),
    "random-resize-pad": lambda base, train: robustmm.defend(base, "random-resize-pad"),
    "smoothing": lambda base, train: robustmm.defend(base, "smoothing", sigma=0.12, n0=4, draws=8),
    "calibration": _trained("calibration", modality="image", epochs=1, batch_size=4, progress=False,
                            attack=robustmm.build_attack("pgd", eps=2 / 255, steps=1)),
    "noise-heads": _trained("noise-heads", modality="audio", sigma=0.01, draws=1, epochs=1, progress=False),
    "denoiser": _trained("denoiser", modality="depth", sigma=0.1, epochs=1, batch_size=4, width=4, depth=2),
    "fare": _trained("fare", modality="thermal", epochs=1, batch_size=4, steps=1, progress=False),
    "clipure": lambda base, train: robustmm.defend(base, "clipure", steps=3),
    "counterattack": _trained("counterattack", modality="image", steps=1, fit_n=8),
    "invgc": _trained("invgc", modality="audio", k=3),
    "tecoa": _trained("tecoa", modality="audio", epochs=1, batch_size=4, steps=1, lora_rank=2, progress=False),
}


def _missing_defense(name: str) -> str:
    return (f"defense {name!r} is registered but has no entry in DEFENSE_BUILDERS ({HERE}): add "
            f"'{name}': lambda base, train: robustmm.defend(base, '{name}', ...), building a tiny instance offline")


def test_every_defense_family_has_a_builder():
    missing = [d for d in DEFENSES if d not in DEFENSE_BUILDERS]
    assert not missing, "; ".join(_missing_defense(d) for d in missing)


@pytest.fixture(scope="module")
def defended():
    train = synthscenes(8, seed=7, split="train")
    base = tiny_tinybind(train)
    cache: dict[str, Any] = {}

    def get(name: str):
        if name not in DEFENSE_BUILDERS:
            pytest.fail(_missing_defense(name))
        if name not in cache:
            cache[name] = DEFENSE_BUILDERS[name](base, train)
        return cache[name]

    return get


@pytest.mark.parametrize("name", DEFENSES)
def test_defense_is_a_frozen_encoder(defended, name):
    check_frozen_and_described(defended(name))


@pytest.mark.parametrize("name, modality", [pytest.param(d, m, id=f"{d}-{m}") for d in DEFENSES
                                             for m in CONTINUOUS_MODALITIES])
def test_defense_embeddings_unit_norm_differentiable(defended, raw_inputs, name, modality):
    from robustmm.encoders.straight_through import bpda

    enc = defended(name)
    if modality not in enc.modalities:
        pytest.skip(f"{name} does not embed {modality}")
    randomized = bool(getattr(enc, "randomized", False))
    try:  # a declared non-differentiable step has its stand-in's gradient under BPDA (its own is zero)
        with bpda(bool(getattr(enc, "bpda_steps", ()))):
            check_embeddings(enc, raw_inputs, modality, batch_independent=not randomized)
    except RobustMMError as e:  # an input transform defined for some modalities only says so in one line
        assert modality in str(e), e
        pytest.skip(str(e))


@pytest.mark.parametrize("name", DEFENSES)
def test_defense_text_tower(defended, name):
    check_text_tower(defended(name))
