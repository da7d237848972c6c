"""The defense-zoo audit (robustmm/defenses/audit.py), its recipes, the `robustmm zoo` runner, table and figure."""
import json

import pytest
import torch

from robustmm.cli import main
from robustmm.defenses.audit import (
    AuditConfig,
    attack_plan,
    audit_defense,
    find_cost,
    naive_overstates,
    trained_parameters,
)
from robustmm.defenses.audit_recipes import (
    AuditRecipe,
    MissingRecipeError,
    audit_recipe,
    register_audit_recipe,
    unregister_audit_recipe,
)
from robustmm.defenses.registry import defend, list_defenses, register_defense_family, unregister_defense_family
from robustmm.encoders.base import WrapperEncoder
from robustmm.job.zoo import zoo_command
from robustmm.report.zoo import plot_zoo, zoo_markdown

MODALITIES = ("image", "video", "audio", "depth", "thermal", "pointcloud")


class RoundingEncoder(WrapperEncoder):
    """A masking defense: inputs rounded to 4 levels with torch.round (zero gradient), no BPDA declared."""

    def __init__(self, base):
        super().__init__(base)
        self.eval()

    def _encode(self, modality, x):
        return self.base.encode(modality, torch.round(x * 4) / 4, validate=False)


class FlippedEncoder(WrapperEncoder):
    """A differentiable, deterministic "defense" that mirrors the input: transfer from the bare model fails."""

    def __init__(self, base):
        super().__init__(base)
        self.eval()

    def _encode(self, modality, x):
        return self.base.encode(modality, x.flip(-1), validate=False)


@pytest.fixture
def fake_family():
    """Registers a family (and its recipe) for one test, removed afterwards."""
    added = []

    def add(name, cls, recipe=True):
        register_defense_family(name, "input transform", f"test family {name}")(lambda enc, data=None, **kw: cls(enc))
        if recipe:
            register_audit_recipe(name, AuditRecipe())
        added.append(name)
        return name

    yield add
    for name in added:
        unregister_defense_family(name)
        unregister_audit_recipe(name)


TINY = AuditConfig(n=12, steps=3, eot_samples=2, targets=2, checks=True, cert_n=4)


@pytest.mark.parametrize("family", sorted(list_defenses()))
def test_audit_recipe_exists_for_every_registered_family(family):
    recipe = audit_recipe(family)  # a new family fails here until it has a recipe
    for m in MODALITIES:
        for quick in (False, True):
            candidates = recipe.settings_for(m, quick)
            assert candidates and all(isinstance(c, dict) for c in candidates)


def test_audit_recipe_missing_is_one_line_error(fake_family):
    name = fake_family("test-norecipe", FlippedEncoder, recipe=False)
    with pytest.raises(MissingRecipeError, match="no audit recipe") as e:
        audit_recipe(name)
    assert "\n" not in str(e.value) and "register_audit_recipe" in str(e.value)


def test_audit_recipe_sigma_and_quick():
    recipe = AuditRecipe(settings={"epochs": 5}, quick={"epochs": 1}, sigma=True, candidates=({"lr": 1e-3}, {"lr": 1e-2}))
    full = recipe.settings_for("audio")
    assert [c["lr"] for c in full] == [1e-3, 1e-2] and all(c["sigma"] == 0.01 and c["epochs"] == 5 for c in full)
    assert recipe.settings_for("image", quick=True)[0]["epochs"] == 1


def test_naive_overstates_rule():
    flag, se = naive_overstates(0.8, 0.2, 64)
    assert flag and se == pytest.approx(((0.8 * 0.2 + 0.2 * 0.8) / 64) ** 0.5)
    assert not naive_overstates(0.5, 0.45, 64)[0]      # within noise
    assert not naive_overstates(0.2, 0.5, 64)[0]       # adaptive above naive: nothing to say
    assert not naive_overstates(None, 0.5, 64)[0]


def test_attack_plan_reads_declarations(trained, synth_small):
    data = synth_small.head(4)
    assert attack_plan(trained, trained, "image", data)["gradient"] == "ok"
    jpeg = attack_plan(trained, defend(trained, "jpeg"), "image", data)
    assert jpeg["bpda"] and not jpeg["eot"] and not jpeg["masked_without_bpda"]
    rrp = attack_plan(trained, defend(trained, "random-resize-pad"), "image", data)
    assert rrp["eot"] and rrp["randomized_declared"] and not rrp["bpda"]


def test_audit_defense_flags_masked_gradient_without_checks(trained, synth_small, fake_family, one_thread):
    name = fake_family("test-rounding", RoundingEncoder)
    cfg = AuditConfig(n=8, steps=1, checks=False)
    row = audit_defense(trained, name, "image", train=synth_small, val=synth_small, test=synth_small, config=cfg).row
    assert row["plan"]["masked_without_bpda"] and row["checks"] is None
    assert "gradient zero with no BPDA stand-in declared (masked gradient)" in row["flagged"]


@pytest.mark.slow  # the gradient-masking checks: a dozen attacks (about a minute on a busy CPU)
def test_audit_defense_flags_masked_gradient(trained, synth_small, fake_family, one_thread):
    name = fake_family("test-rounding", RoundingEncoder)
    out = audit_defense(trained, name, "image", train=synth_small, val=synth_small, test=synth_small, config=TINY)
    row = out.row
    assert row["status"] == "ok"
    assert row["plan"]["gradient"] == "zero" and row["plan"]["masked_without_bpda"]
    assert any("masked gradient" in f for f in row["flagged"])
    assert not row["checks"]["passed"]                  # the huge-eps check cannot break it without a gradient
    assert any(r.extra.get("zoo_role") == "worst-case" for r in out.results)
    for r in out.results:
        assert r.to_dict()["schema"] == "robustmm.result/1"


@pytest.mark.slow
def test_audit_defense_names_naive_overstates(trained, synth_small, fake_family, one_thread):
    name = fake_family("test-flip", FlippedEncoder)
    cfg = AuditConfig(n=24, steps=5, checks=False)
    row = audit_defense(trained, name, "image", train=synth_small, val=synth_small, test=synth_small, config=cfg).row
    mid = row["eps"]["middle"]
    assert mid["naive"] > mid["worst"] and mid["naive_overstates"]
    assert row["naive_overstates"] and "naive overstates at the middle eps" in row["flagged"]
    assert mid["worst"] <= min(v for v in mid["parts"].values())   # per item worst: at most every part


def test_audit_defense_not_applicable_is_a_row(trained, synth_small):
    row = audit_defense(trained, "jpeg", "audio", train=synth_small, val=synth_small, test=synth_small, config=TINY).row
    assert row["status"] == "n/a" and "audio" in row["reason"]


def test_trained_parameters_counts_added_and_changed(trained):
    heads_like = FlippedEncoder(trained)
    heads_like.extra = torch.nn.Linear(4, 3)
    assert trained_parameters(trained, heads_like)["trained"] == 15
    import copy

    tuned = copy.deepcopy(trained)
    p = next(tuned.tower("image").parameters())
    with torch.no_grad():
        p.add_(1.0)
    assert trained_parameters(trained, tuned)["trained"] == p.numel()


def test_find_cost_reads_any_block():
    assert find_cost({"extra": {"cost": {"forward": 3, "backward": 2}}}) == {"forward": 3, "backward": 2}
    assert find_cost({"attack": {"cost": {"forward": 1}}}) == {"forward": 1}
    assert find_cost({"metrics": {}}) is None


def _summary():
    ok = {"defense": "jpeg", "modality": "image", "status": "ok", "clean": 0.9, "n": 32,
          "eps": {"smallest": {"eps_label": "1/255", "naive": 0.8, "worst": 0.7, "naive_overstates": False},
                  "middle": {"eps_label": "4/255", "naive": 0.7, "worst": 0.1, "naive_overstates": True}},
          "params": {"trained": 0}, "cost": {"train_s": 0.0, "infer_ms_per_item": 2.0, "bare_infer_ms_per_item": 1.0,
                                             "attack_passes": "not recorded"},
          "certified": None, "flagged": ["naive overstates at the middle eps"]}
    smooth = dict(ok, defense="smoothing", modality="audio", certified={"sigma": 0.01, "top1": {"0.004": 0.5, "0.016": None}},
                  flagged=[], params={"trained": 12345})
    na = {"defense": "jpeg", "modality": "audio", "status": "n/a", "reason": "jpeg takes image-like inputs"}
    err = {"defense": "fare", "modality": "depth", "status": "error", "reason": "RuntimeError: boom"}
    return {"settings": {"model": "tinybind", "data": "synthscenes", "n": 32}, "rows": [ok, smooth, na, err], "wall_s": 12.0}


def test_zoo_markdown_covers_every_row():
    md = zoo_markdown(_summary())
    assert "| image | jpeg | 90.0 | 80.0 @1/255 | 70.0 | 70.0 @4/255 | 10.0 |" in md
    assert "naive overstates at the middle eps" in md and "(×2.0)" in md
    assert "σ=0.01: r=0.004: 50.0, r=0.016: unreachable" in md and "12.3k" in md
    assert "n/a: jpeg takes image-like inputs" in md and "error: RuntimeError: boom" in md


def test_plot_zoo_one_panel_per_modality(tmp_path):
    from robustmm.report.plots.style import save_figure

    fig = plot_zoo(_summary())
    assert len([a for a in fig.axes if a.get_visible()]) == 2
    paths = save_figure(fig, tmp_path / "zoo")
    assert all(p.stat().st_size > 1000 for p in paths)


@pytest.mark.parametrize("argv", [
    ["--defenses", "nope"], ["--modalities", "sound"], ["--n", "0"], ["--defenses", ""], ["--steps", "-1"],
])
def test_zoo_cli_bad_input_exits_2(argv, tmp_path, capsys):
    assert main(["zoo", *argv, "--out", str(tmp_path / "z")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("robustmm zoo: error:") and "\n" not in err


def test_zoo_cli_missing_recipe_exits_2(fake_family, tmp_path, capsys):
    fake_family("test-norecipe", FlippedEncoder, recipe=False)
    assert main(["zoo", "--defenses", "test-norecipe", "--out", str(tmp_path / "z")]) == 2
    assert "no audit recipe" in capsys.readouterr().err


def test_zoo_command_writes_and_resumes(tmp_path, one_thread):
    kw = {"defenses": "bit-depth", "modalities": "depth", "n": 4, "n_train": 4, "n_val": 4, "steps": 1, "cert_n": 2,
          "checks_on": False, "quick": True, "out": tmp_path}
    summary = zoo_command(**kw)
    assert [(r["defense"], r["modality"], r["status"]) for r in summary["rows"]] == [("bit-depth", "depth", "ok")]
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    assert lines and all(json.loads(x)["schema"] == "robustmm.result/1" for x in lines)
    assert (tmp_path / "defense_zoo.md").exists() and (tmp_path / "defense_zoo.png").exists()
    again = zoo_command(**kw, resume=True)          # nothing left to do
    assert len(again["rows"]) == 1 and (tmp_path / "records.jsonl").read_text().splitlines() == lines
    with pytest.raises(Exception, match="--resume"):
        zoo_command(**kw)                          # a finished folder without --resume
    with pytest.raises(Exception, match="other settings"):
        zoo_command(**(kw | {"n": 5}), resume=True)


@pytest.mark.slow  # certification draws: a minute on a busy CPU
def test_audit_defense_certifies_smoothing_entries(trained, synth_small, one_thread):
    from robustmm.evaluation.certification import reference_radii

    cfg = AuditConfig(n=4, steps=1, checks=False, cert_n=2, cert_draws=16)
    row = audit_defense(trained, "smoothing", "audio", train=synth_small, val=synth_small, test=synth_small, config=cfg).row
    cert = row["certified"]
    assert cert["sigma"] == 0.01 and cert["draws"] == 16
    assert {float(k) for k in cert["top1"]} >= set(reference_radii("audio"))
    assert audit_defense(trained, "bit-depth", "audio", train=synth_small, val=synth_small, test=synth_small,
                         config=cfg).row["certified"] is None
