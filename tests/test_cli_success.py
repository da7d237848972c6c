"""Success paths of the command line, run in-process on the shipped TinyBind and 8 SynthScenes items:
``eval --eps A B C`` (one result per budget), ``eval --heads`` (scores through the heads),
``report`` (report.md + summary.csv from a results file) and ``check-attack`` (its JSON)."""
from __future__ import annotations

import csv
import json

import pytest
import torch

import robustmm
from robustmm.cli import main
from robustmm.defenses import load_heads, save_heads
from robustmm.records import read_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL, MODALITY, N = "tinybind", "audio", "8"
EPS = (0.002, 0.004, 0.008)


def eval_args(*extra: str) -> list[str]:
    return ["eval", "--model", MODEL, "--modality", MODALITY, "--n", N, "-q", *extra]


@pytest.fixture(scope="module")
def curve(trained, tmp_path_factory):
    """``robustmm eval --attack pgd --eps A B C`` written as JSONL; returns (path, rows)."""
    out = tmp_path_factory.mktemp("curve") / "curve.jsonl"
    assert main(eval_args("--attack", "pgd", "--steps", "2", "--eps", *map(str, EPS), "--out", str(out))) == 0
    return out, read_jsonl(out)


@pytest.fixture(scope="module")
def data():
    return robustmm.load_dataset("synthscenes", split="test", n=int(N))


def test_eval_several_eps_gives_one_result_per_budget(curve):
    _, rows = curve
    assert len(rows) == 3
    assert [r["attack"]["eps"] for r in rows] == pytest.approx(list(EPS))
    assert {r["attack"]["name"] for r in rows} == {"pgd"} and {r["modality"] for r in rows} == {MODALITY}
    assert all(r["n"] == int(N) and r["threat"] == "white-box" for r in rows)
    assert len({json.dumps(r["metrics"]["clean"], sort_keys=True) for r in rows}) == 1  # one clean pass
    top1 = [r["metrics"]["attacked"]["zeroshot_top1"] for r in rows]
    assert top1 == sorted(top1, reverse=True)  # nested balls: never rises with eps
    assert top1[-1] < rows[0]["metrics"]["clean"]["zeroshot_top1"]  # the trained model does get attacked


def test_eval_single_eps_matches_evaluate(trained, data, tmp_path):
    out = tmp_path / "one.json"
    assert main(eval_args("--attack", "pgd", "--steps", "2", "--eps", "0.004", "--out", str(out))) == 0
    rec = json.loads(out.read_text())
    res = robustmm.evaluate(trained, data, modality=MODALITY, attack=robustmm.build_attack("pgd", eps=0.004, steps=2),
                            progress=False)
    assert rec["metrics"]["clean"] == pytest.approx(res.metrics["clean"])
    assert rec["metrics"]["attacked"] == pytest.approx(res.metrics["attacked"])


def test_eval_several_eps_into_a_json_name_can_be_reported(trained, tmp_path):
    """Several budgets into a .json name: one JSON list (not JSON lines), which `report` reads."""
    out = tmp_path / "curve.json"
    assert main(eval_args("--attack", "pgd", "--steps", "1", "--eps", "0.002", "0.004", "--out", str(out))) == 0
    doc = json.loads(out.read_text())
    assert isinstance(doc, list) and [r["attack"]["eps"] for r in doc] == pytest.approx([0.002, 0.004])
    assert len(robustmm.load_results([out])) == 2
    assert main(["report", str(out), "--out", str(tmp_path / "rep"), "-q"]) == 0
    assert len((tmp_path / "rep" / "summary.csv").read_text().splitlines()) == 3


@pytest.fixture(scope="module")
def strong_heads(trained, tmp_path_factory):
    """Heads trained by ``robustmm calibrate``, then made to matter: the up-projection is replaced
    by a large random one, so scores through the heads differ from the bare model's."""
    d = tmp_path_factory.mktemp("heads")
    trained_heads = d / "trained.safetensors"
    assert main(["calibrate", "--model", MODEL, "--modality", MODALITY, "--n", N, "--epochs", "2", "--steps", "1",
                 "--out", str(trained_heads), "-q"]) == 0
    heads, meta = load_heads(trained_heads, trained)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        up = heads[MODALITY].up.weight
        up.copy_(torch.randn(up.shape, generator=g) * 0.5)
    path = d / "strong.safetensors"
    save_heads(path, heads, meta)
    return path


def test_eval_with_heads_scores_through_the_heads(trained, data, strong_heads, tmp_path):
    out = tmp_path / "heads.json"
    assert main(eval_args("--heads", str(strong_heads), "--out", str(out))) == 0
    rec = json.loads(out.read_text())
    assert rec["defense"]["name"] == "calibration"
    heads, _ = load_heads(strong_heads, trained)
    through = robustmm.evaluate(trained.with_heads(heads), data, modality=MODALITY, progress=False)
    bare = robustmm.evaluate(trained, data, modality=MODALITY, progress=False)
    assert rec["metrics"]["clean"] == pytest.approx(through.metrics["clean"])
    assert through.metrics["clean"] != pytest.approx(bare.metrics["clean"])  # the heads change the scores


def test_eval_with_heads_and_an_attack(trained, strong_heads, tmp_path):
    out = tmp_path / "heads_attacked.jsonl"
    assert main(eval_args("--heads", str(strong_heads), "--attack", "pgd", "--steps", "1", "--out", str(out))) == 0
    rows = read_jsonl(out)
    assert rows and all(r["defense"]["name"] == "calibration" and r["metrics"]["attacked"] is not None for r in rows)
    assert {r["threat"] for r in rows} <= {"head-unaware", "adaptive", "worst-case"}


def test_report_writes_markdown_and_csv(curve, tmp_path):
    path, rows = curve
    out = tmp_path / "report"
    assert main(["report", str(path), "--out", str(out), "-q"]) == 0
    with open(out / "summary.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    for line, rec in zip(sorted(table, key=lambda r: float(r["eps"])), rows):
        assert line["model"] == rec["model"]["name"] and line["modality"] == MODALITY and line["attack"] == "pgd"
        assert float(line["eps"]) == pytest.approx(rec["attack"]["eps"])
        for key in ("zeroshot_top1", "t2x_R@1"):
            assert float(line[f"clean_{key}"]) == pytest.approx(rec["metrics"]["clean"][key], abs=1e-4)
            assert float(line[f"attacked_{key}"]) == pytest.approx(rec["metrics"]["attacked"][key], abs=1e-4)
    md = (out / "report.md").read_text()
    assert md.startswith("# robustmm report") and f"**{rows[0]['model']['name']}**" in md
    for rec in rows:  # every budget's attacked top-1, as the vulnerability table prints it
        assert f"{rec['attack']['eps']:g}: {rec['metrics']['attacked']['zeroshot_top1']:.3f}" in md


def test_check_attack_writes_its_json(trained, tmp_path):
    out = tmp_path / "checks.json"
    rc = main(["check-attack", "--model", MODEL, "--modality", MODALITY, "--n", N, "--steps", "2", "--out", str(out),
               "-q"])
    doc = json.loads(out.read_text())
    checks = doc["checks"]
    assert doc["passed"] == all(c["passed"] for c in checks)
    assert rc == (0 if doc["passed"] else 1)
    names = {c["name"] for c in checks}
    assert {"non-increasing in eps", "random noise weaker than the attack"} <= names
    for c in checks:
        assert isinstance(c["passed"], bool) and c["detail"] and c["values"]
    huge = next(c for c in checks if c["name"].startswith("about zero at a huge eps"))
    assert huge["passed"] == (huge["values"]["top1"] <= 0.05)


def test_eval_patch_on_another_image_like_modality(trained, tmp_path):
    """`eval --attack patch --modality thermal` fits and scores the patch on thermal, the
    modality asked for, not on image."""
    out = tmp_path / "patch.json"
    assert main(["eval", "--model", MODEL, "--modality", "thermal", "--n", "4", "--attack", "patch", "--fit-n", "4",
                 "-q", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["modality"] == "thermal" and rec["attack"]["name"] == "patch" and rec["attack"]["modality"] == "thermal"
