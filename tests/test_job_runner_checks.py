"""`robustmm run` checks before work and never mixes jobs: the job's fingerprint is stored in the
output folder and `--resume` refuses another job naming the keys that differ; model-modality
compatibility and the output folders are checked before the first cell."""
import json

import pytest

import robustmm.job.config as config
from robustmm.errors import RobustMMError
from robustmm.job import cell_kinds, parse_config, run_job


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, rand_encoder):
    d = tmp_path_factory.mktemp("model")
    rand_encoder.save(d / "model")
    return d / "model"


def job(model_dir, modalities=("thermal",), **tables):
    raw = {k.name: {"enabled": False} for k in cell_kinds() if k.name not in ("clean", "attacks")}
    raw |= {"run": {"model": f"tinybind:{model_dir}", "quick_n": 4, "quick_attack_n": 4, "batch_size": 4,
                    "modalities": list(modalities)}, "report": {"examples": False}}
    for name, table in tables.items():
        raw[name] = raw.get(name, {}) | table
    return parse_config(raw)


def test_fingerprint_differences_name_each_key():
    a = {"quick": True, "job": {"run": {"model": "tinybind", "n": 10}, "pgd": {"steps": 2}}}
    b = {"quick": True, "job": {"run": {"model": "tinybind-alt", "n": 10}, "pgd": {"steps": 7}}}
    assert config.fingerprint_differences(a, b) == ['[pgd] steps: 2 -> 7', '[run] model: "tinybind" -> "tinybind-alt"']
    assert config.fingerprint_differences(a, a) == []
    assert config.fingerprint_differences(a, {**a, "quick": False}) == ["--quick: True -> False"]


def test_resume_refuses_a_changed_job_and_names_the_keys(tmp_path, model_dir, one_thread):
    out = tmp_path / "o"
    run_job(job(model_dir, pgd={"steps": 2}), out, quick=True, progress=False)
    stored = json.loads((out / "job.json").read_text())
    assert stored == config.job_fingerprint(job(model_dir, pgd={"steps": 2}), True)
    before = (out / "results.jsonl").read_text()
    with pytest.raises(RobustMMError, match=r"--resume: .* was started with another job \(\[pgd\] steps: 2 -> 7\)"):
        run_job(job(model_dir, pgd={"steps": 7}), out, quick=True, resume=True, progress=False)
    with pytest.raises(RobustMMError, match=r'\[run\] model: "tinybind:.*" -> "tinybind-alt"'):
        changed = job(model_dir, pgd={"steps": 2})
        changed.run.model = "tinybind-alt"
        run_job(changed, out, quick=True, resume=True, progress=False)
    assert (out / "results.jsonl").read_text() == before  # nothing mixed in
    # the same job resumes (nothing to do), and --overwrite starts the other one
    assert len(run_job(job(model_dir, pgd={"steps": 2}), out, quick=True, resume=True, progress=False)) == 1
    run_job(job(model_dir, pgd={"steps": 7}), out, quick=True, overwrite=True, progress=False)
    assert json.loads((out / "job.json").read_text())["job"]["pgd"]["steps"] == 7


def test_a_missing_tower_is_refused_before_the_first_cell(tmp_path, model_dir, monkeypatch, one_thread):
    import robustmm.job.context as context

    real = context.load_encoder

    def thermal_only(name, **kw):
        enc = real(name, **kw)
        enc.modalities = ("thermal",)
        return enc

    monkeypatch.setattr(context, "load_encoder", thermal_only)
    out = tmp_path / "o"
    with pytest.raises(RobustMMError, match=r"\[run\] modalities: model .* has no audio tower"):
        run_job(job(model_dir, modalities=("thermal", "audio")), out, quick=True, progress=False)
    assert not (out / "results.jsonl").exists()  # no cell ran


def test_an_unwritable_heads_folder_is_refused_before_the_first_cell(tmp_path, model_dir, one_thread):
    out = tmp_path / "o"
    out.mkdir()
    (out / "heads").write_text("a file where the heads folder belongs")
    with pytest.raises(RobustMMError, match=r"heads/ folder .*heads is a file"):
        run_job(job(model_dir), out, quick=True, progress=False)
    assert not (out / "results.jsonl").exists()


def test_job_seed_reaches_every_attack_and_is_recorded(tmp_path, model_dir, one_thread):
    raw = job(model_dir, attacks={"apgd": {"eps": [4 / 255], "settings": {"steps": 1}},
                                  "square": {"eps": [4 / 255], "settings": {"n_queries": 2}}})
    raw.run.seed = 5
    results = run_job(raw, tmp_path / "o", quick=True, progress=False)
    attacked = [r for r in results if r.attack]
    assert {r.attack["name"] for r in attacked} == {"apgd", "square"}
    assert all(r.attack["seed"] == 5 and r.seed == 5 for r in attacked)
