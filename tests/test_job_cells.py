"""The cell registry of `robustmm run`: a toy attack defined in this one file runs through a job
cell with only a config entry; a toy cell kind makes its section valid and its cells run; kinds
run in registry order."""
import dataclasses
import json
from typing import Any

import pytest
import torch

from robustmm.attacks import Attack, register_attack
from robustmm.cli import main
from robustmm.errors import UnknownNameError
from robustmm.evaluation import evaluate
from robustmm.job import Cell, CellKind, cell_kinds, list_cell_kinds, parse_config, register_cell, run_job
from robustmm.job.registry import unregister_cell
from robustmm.job.sections import ConfigError, Section, option
from robustmm.modalities import get_modality

TOY = "toy-job-noise"
TOY_LEARNED = "toy-job-learned"


@register_attack(TOY)
class ToyNoise(Attack):
    """Uniform noise of amplitude ``scale * eps`` (a test fixture, not a library attack)."""

    def __init__(self, eps: float | None = None, scale: float = 1.0, seed: int = 0):
        self.eps, self.scale, self.seed = eps, float(scale), int(seed)

    def settings(self) -> dict[str, Any]:
        return {"eps": self.eps, "scale": self.scale, "seed": self.seed}

    def resolve(self, modality: str) -> "ToyNoise":
        return self if self.eps is not None else self.replace(eps=get_modality(modality).middle_eps)

    def __call__(self, encoder: Any, batch: Any) -> Any:
        spec = get_modality(batch.modality)
        g = torch.Generator().manual_seed(self.seed)
        noise = (torch.rand(batch.x.shape, generator=g) * 2 - 1).to(batch.x) * self.eps * self.scale
        return batch.replace(x=(batch.x + noise).clamp(*spec.domain))


@register_attack(TOY_LEARNED)
class ToyLearned(ToyNoise):
    """A toy learned attack: refuses to run before ``fit``, which records the training size."""

    needs_fit = True
    fit_split = "train"

    def __init__(self, eps: float | None = None, scale: float = 1.0, seed: int = 0):
        super().__init__(eps, scale, seed)
        self.fitted_on: int | None = None

    def fit(self, encoder: Any, dataset: Any) -> "ToyLearned":
        self.fitted_on = len(dataset)
        return self

    def resolve(self, modality: str) -> "ToyLearned":
        resolved = super().resolve(modality)
        resolved.fitted_on = self.fitted_on  # a resolved copy keeps what was learned
        return resolved

    def __call__(self, encoder: Any, batch: Any) -> Any:
        assert self.fitted_on is not None, "not fitted"
        return super().__call__(encoder, batch)


OFF_KINDS = ("clean", "pgd", "patch", "sga", "xmai", "input_defenses", "calibration", "ensemble", "certification", "checks")
OFF = "".join(f"[{k}]\nenabled = false\n" for k in OFF_KINDS)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, rand_encoder):
    d = tmp_path_factory.mktemp("model") / "model"
    rand_encoder.save(d)
    return f"tinybind:{d}"


def job_text(model: str, body: str) -> str:
    return (f'[run]\nmodel = "{model}"\nquick_n = 12\nquick_attack_n = 12\nmodalities = ["thermal"]\n'
            f"batch_size = 12\n[report]\nexamples = false\n{OFF}{body}")


def rows(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_toy_attack_runs_through_a_job_cell_with_only_a_config_entry(tmp_path, tiny_model):
    cfg = tmp_path / "job.toml"
    cfg.write_text(job_text(tiny_model, f'[attacks.{TOY}]\neps = [0.02, 0.05]\nsettings = {{ scale = 0.5, seed = 3 }}\n'))
    assert main(["run", str(cfg), "--quick", "--out", str(tmp_path / "o"), "-q"]) == 0
    got = rows(tmp_path / "o")
    assert [r["extra"]["cell"] for r in got] == [f"{tiny_model}|thermal|attack:{TOY}"] * 2
    assert [r["attack"]["eps"] for r in got] == [0.02, 0.05]
    assert all(r["attack"]["name"] == TOY and r["attack"]["scale"] == 0.5 and r["attack"]["seed"] == 3 for r in got)
    assert all(r["threat"] == "white-box" and r["n"] == 12 and "attacked" in r["metrics"] for r in got)
    # resumable like every cell: nothing is run twice
    assert main(["run", str(cfg), "--quick", "--out", str(tmp_path / "o"), "-q", "--resume"]) == 0
    assert len(rows(tmp_path / "o")) == 2


def test_generic_cell_fits_learned_attacks_and_defaults_eps(tmp_path, tiny_model):
    config = parse_config({"run": {"model": tiny_model, "quick_n": 12, "quick_attack_n": 12, "modalities": ["thermal"],
                                   "batch_size": 12},
                           "report": {"examples": False},
                           **{k: {"enabled": False} for k in OFF_KINDS},
                           "attacks": {TOY_LEARNED: {"quick_fit_n": 7, "quick_n": 5}, TOY: {"enabled": False}}})
    got = run_job(config, tmp_path / "o", quick=True, progress=False)
    assert len(got) == 1 and got[0].n == 5
    assert got[0].extra["fit"]["size"] == 7 and got[0].extra["fit"]["split"] == "train"
    assert got[0].attack["name"] == TOY_LEARNED and got[0].attack["eps"] == get_modality("thermal").middle_eps


def test_generic_cell_fits_the_universal_patch_on_the_cells_modality(tmp_path, tiny_model):
    """``[attacks.patch]`` alone fits the patch (it declares ``needs_fit``) on ``quick_fit_n`` train
    items of the cell's modality and scores it; before, it was never fitted and the cell failed."""
    config = parse_config({"run": {"model": tiny_model, "quick_n": 6, "quick_attack_n": 6, "modalities": ["thermal"],
                                   "batch_size": 6},
                           "report": {"examples": False},
                           **{k: {"enabled": False} for k in OFF_KINDS},
                           "attacks": {"patch": {"quick_fit_n": 8, "settings": {"epochs": 1}}, TOY: {"enabled": False}}})
    got = run_job(config, tmp_path / "o", quick=True, progress=False)
    assert [r.extra["cell"] for r in got] == [f"{tiny_model}|thermal|attack:patch"]
    (res,) = got
    assert res.n == 6 and res.attack["name"] == "patch" and res.attack["modality"] == "thermal"
    assert res.extra["fit"]["split"] == "train" and res.extra["fit"]["size"] == 8
    assert res.attack["fitted_on"]["n_train"] == 8 and res.attack["size_px"] is not None


@pytest.mark.parametrize("table, run, needle", [
    ({"quick_fit_n": 10**6}, {"modalities": ["image"]}, "[attacks.patch] quick_fit_n: expected an integer <="),
    ({"fit_n": 10**6}, {"modalities": ["image"]}, "[attacks.patch] fit_n: expected an integer <="),  # now checked
    ({}, {"modalities": ["image", "audio"]}, "[attacks.patch] modalities (audio): "),  # a patch is image-like only
    ({"settings": {"modality": "depth"}}, {"modalities": ["image"]}, "[attacks.patch] modalities (image): "),
])
def test_generic_patch_cell_is_checked_at_load(table, run, needle):
    with pytest.raises(ConfigError) as e:
        parse_config({"run": run, "attacks": {"patch": table}}, "job.toml")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_attack_cell_settings_are_checked_at_load():
    with pytest.raises(UnknownNameError, match="did you mean 'scale'"):
        parse_config({"attacks": {TOY: {"settings": {"scael": 1}}}})
    with pytest.raises(UnknownNameError, match=f"did you mean '{TOY}'"):
        parse_config({"attacks": {"toy-job-nois": {}}})
    with pytest.raises(ConfigError, match="expected tables"):
        parse_config({"attacks": 3})
    with pytest.raises(ConfigError, match=rf"\[attacks.{TOY}\]: expected a table of keys, got 3"):
        parse_config({"attacks": {TOY: 3}})


BUILTIN = ["clean", "pgd", "patch", "sga", "xmai", "attacks", "input_defenses", "calibration", "ensemble", "worst_curves",
           "certification",
           "checks"]


def test_kinds_run_in_registry_order():
    names = [k.name for k in cell_kinds()]
    assert [n for n in names if n in BUILTIN] == BUILTIN
    assert list(list_cell_kinds())[: len(names)] == names
    assert all(list_cell_kinds()[n] for n in BUILTIN)  # every kind says what it does


@dataclasses.dataclass
class ToyKindConfig(Section):
    enabled: bool = False  # off unless a job asks: other tests' jobs never run it
    label: str = "x"
    n: int = option(6, positive=True)
    quick_n: int | None = option(4, positive=True)


@pytest.fixture
def toy_kind():
    @register_cell("toy-kind", order=5)
    class ToyKind(CellKind):
        """A clean evaluation on the first n items, keyed by a label (a test fixture)."""

        Config = ToyKindConfig

        def cells(self, ctx, section):
            n = ctx.pick("toy-kind", "n")
            return [Cell(ctx.key(m, f"toy:{section.label}"),
                         lambda m=m: [evaluate(ctx.encoder(), ctx.dataset(n=n), modality=m, **ctx.kw())])
                    for m in ctx.modalities]

    yield ToyKind
    unregister_cell("toy-kind")


def test_a_new_cell_kind_is_one_class(tmp_path, tiny_model):
    with pytest.raises(UnknownNameError, match="toy-kind"):
        parse_config({"toy-kind": {}})

    @register_cell("toy-kind", order=5)
    class Kind(CellKind):
        Config = ToyKindConfig

    try:
        assert parse_config({"toy-kind": {"label": "y"}}).section("toy-kind").label == "y"
        with pytest.raises(ConfigError, match=r"\[toy-kind\] n: expected an integer > 0, got 0"):
            parse_config({"toy-kind": {"n": 0}})
    finally:
        unregister_cell("toy-kind")


def test_a_new_cell_kind_runs_first_by_its_order(tmp_path, tiny_model, toy_kind):
    cfg = tmp_path / "job.toml"
    cfg.write_text(job_text(tiny_model, '[toy-kind]\nenabled = true\nlabel = "a"\n').replace(
        "[clean]\nenabled = false\n", ""))
    assert main(["run", str(cfg), "--quick", "--out", str(tmp_path / "o"), "-q"]) == 0
    got = rows(tmp_path / "o")
    assert [r["extra"]["cell"] for r in got] == [f"{tiny_model}|thermal|toy:a", f"{tiny_model}|thermal|clean"]
    assert [r["n"] for r in got] == [4, 12]  # quick_n of the toy section, then [run] quick_n


def test_register_cell_needs_a_cell_kind():
    with pytest.raises(TypeError, match="CellKind"):
        register_cell("not-a-kind")(lambda ctx, section: [])
