"""`robustmm eval`, `certify` and `run CONFIG` on every user-data format, with a user encoder
named as module:function (tests/_user_encoder.py), and the bad-data one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import _user_data as ud
import pytest

from robustmm.cli import main
from robustmm.errors import RobustMMError

MODEL = "_user_encoder:build"

#: format -> (fixture writer, modality, items)
FORMATS = {
    "imagefolder": (ud.image_folder, "image", 9),
    "audiofolder": (ud.audio_folder, "audio", 6),
    "pointcloudfolder": (ud.point_folder, "pointcloud", 6),
    "manifest": (ud.jsonl_manifest, "image", 9),
    "hf": (ud.hf_dataset, "image", 9),
    "wds": (ud.wds_shard, "image", 9),
}


def spec(tmp_path: Path, fmt: str) -> tuple[str, str]:
    """``FORMAT:PATH`` of a fresh fixture, and its modality."""
    writer, modality, _ = FORMATS[fmt]
    path = writer(tmp_path / fmt)
    return f"{fmt}:{path}" + (",points=64" if modality == "pointcloud" else ",size=16" if modality == "image" else ""), modality


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("fmt", FORMATS)
def test_eval_runs_on_user_data_with_a_user_encoder(tmp_path, capsys, fmt):
    data, modality = spec(tmp_path, fmt)
    out = tmp_path / "eval.json"
    code, _, err = run_cli(["eval", "--model", MODEL, "--data", data, "--modality", modality, "--n", "6", "--attack", "pgd",
                            "--steps", "2", "--out", str(out), "-q"], capsys)
    assert code == 0, err
    rec = json.loads(out.read_text())
    rec = rec[0] if isinstance(rec, list) else rec
    assert rec["model"]["name"] == "user-tiny" and rec["dataset"]["name"] == fmt and rec["n"] == 6
    assert rec["dataset"]["skipped"] == 0 and rec["metrics"]["clean"]["zeroshot_top1"] >= 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_certify_runs_on_user_data_with_a_user_encoder(tmp_path, capsys, fmt):
    data, modality = spec(tmp_path, fmt)
    out = tmp_path / "cert.json"
    code, _, err = run_cli(["certify", "--model", MODEL, "--data", data, "--modality", modality, "--n", "4",
                            "--sigma", "0.1", "--draws", "8", "--n0", "4", "--out", str(out), "-q"], capsys)
    assert code == 0, err
    assert "certified" in out.read_text()


def job_file(tmp_path: Path, data: str, modality: str) -> Path:
    """A minimal job: clean and a 2-step PGD curve on one modality, every other kind off."""
    from robustmm.job.registry import cell_kinds

    off = "\n".join(f"[{k.name}]\nenabled = false" for k in cell_kinds() if k.name not in ("clean", "pgd", "attacks"))
    text = (f'[run]\nmodel = "{MODEL}"\ndataset = "{data}"\nn = 6\nattack_n = 4\nquick_n = 6\nquick_attack_n = 4\n'
            f'modalities = ["{modality}"]\nbatch_size = 8\n[pgd]\nsteps = 2\nretrieval_n = 4\n{off}\n'
            '[report]\nexamples = false\n')
    path = tmp_path / "job.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("fmt", FORMATS)
def test_run_config_runs_on_user_data_with_a_user_encoder(tmp_path, capsys, fmt):
    data, modality = spec(tmp_path, fmt)
    out = tmp_path / "run"
    code, _, err = run_cli(["run", str(job_file(tmp_path, data, modality)), "--out", str(out), "-q"], capsys)
    assert code == 0, err
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert recs and all(r["dataset"]["name"] == fmt and r["model"]["name"] == "user-tiny" for r in recs)


def test_data_root_can_be_given_as_root_option(tmp_path, capsys):
    root = ud.image_folder(tmp_path / "img")
    code, out, err = run_cli(["eval", "--model", MODEL, "--data", "imagefolder,size=16", "--root", str(root),
                              "--modality", "image", "--n", "3"], capsys)
    assert code == 0, err
    assert "clean top-1" in out


# -- bad data: one line naming the file, exit 2 ------------------------------------------------------
def bad_eval(capsys, data: str, *extra: str, modality: str = "image") -> str:
    code, _, err = run_cli(["eval", "--model", MODEL, "--data", data, "--modality", modality, *extra], capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("robustmm eval: error: ")
    return err


def test_bad_data_missing_folder(tmp_path, capsys):
    assert str(tmp_path / "nowhere") in bad_eval(capsys, f"imagefolder:{tmp_path / 'nowhere'}")


def test_bad_data_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert "has no class folders" in bad_eval(capsys, f"imagefolder:{tmp_path / 'empty'}")


def test_bad_data_empty_class(tmp_path, capsys):
    root = ud.image_folder(tmp_path / "img")
    (root / "yellow").mkdir()
    assert "yellow has no image files" in bad_eval(capsys, f"imagefolder:{root}")


@pytest.mark.parametrize("content, words", [(b"", "empty file (0 bytes)"), (b"not a png at all", "cannot decode image")])
def test_bad_data_corrupt_or_empty_file(tmp_path, capsys, content, words):
    root = ud.image_folder(tmp_path / "img")
    (root / "red" / "broken.png").write_bytes(content)
    err = bad_eval(capsys, f"imagefolder:{root}")
    assert words in err and "red/broken.png" in err


def test_bad_data_manifest_row_pointing_nowhere(tmp_path, capsys):
    manifest = ud.jsonl_manifest(tmp_path / "m")
    manifest.write_text(manifest.read_text() + '{"path": "media/gone.png", "caption": "gone."}\n')
    err = bad_eval(capsys, f"manifest:{manifest}")
    assert "line 10" in err and "media/gone.png points nowhere" in err


def test_bad_data_mixed_sizes_and_sample_rates(tmp_path, capsys):
    root = ud.image_folder(tmp_path / "img")
    from PIL import Image

    Image.new("RGB", (40, 30)).save(root / "red" / "big.png")
    assert "red/big.png: size (40, 30) differs" in bad_eval(capsys, f"imagefolder:{root},size=native")
    aud = ud.audio_folder(tmp_path / "aud")
    (aud / "low_tone" / "fast.wav").write_bytes(ud.wav_bytes(300.0, rate=16000))
    err = bad_eval(capsys, f"audiofolder:{aud},sample_rate=native", modality="audio")
    assert "fast.wav: sample rate (16000,) differs from (8000,)" in err


def test_bad_data_more_items_than_the_folder_holds_states_the_real_count(tmp_path, capsys):
    root = ud.image_folder(tmp_path / "img")
    assert "holds 9 items, fewer than the 100000 asked for" in bad_eval(capsys, f"imagefolder:{root}", "--n", "100000")


def test_skip_bad_skips_and_records_the_count(tmp_path, capsys):
    root = ud.image_folder(tmp_path / "img")
    (root / "red" / "broken.png").write_bytes(b"junk")
    (root / "green" / "empty.png").write_bytes(b"")
    out = tmp_path / "e.json"
    code, _, err = run_cli(["eval", "--model", MODEL, "--data", f"imagefolder:{root},size=16", "--modality", "image",
                            "--skip-bad", "--out", str(out), "-q"], capsys)
    assert code == 0, err
    rec = json.loads(out.read_text())
    rec = rec[0] if isinstance(rec, list) else rec
    assert rec["dataset"]["skipped"] == 2 and rec["n"] == 9


def test_user_model_errors_are_one_line(capsys):
    for model, words in (("no_such_pkg_xyz.models:build", "nor an importable module"),
                         ("_user_encoder:nope", "has no 'nope'")):
        code, _, err = run_cli(["eval", "--model", model, "--modality", "image", "--n", "2"], capsys)
        assert code == 2 and words in err and err.count("\n") == 1


def test_user_model_must_return_an_encoder():
    import robustmm

    with pytest.raises(RobustMMError, match="returned a OrderedDict, not an Encoder"):
        robustmm.load_encoder("collections:OrderedDict")


def test_calibrate_and_check_attack_accept_a_dataset_spec(tmp_path, capsys):
    data = f"imagefolder:{ud.image_folder(tmp_path / 'img')},size=16"
    heads = tmp_path / "heads.safetensors"
    code, _, err = run_cli(["calibrate", "--model", MODEL, "--data", data, "--split", "test", "--modality", "image", "--n", "6",
                            "--epochs", "1", "--steps", "1", "--out", str(heads), "-q"], capsys)
    assert code == 0 and heads.is_file(), err
    code, out, err = run_cli(["check-attack", "--model", MODEL, "--data", data, "--modality", "image", "--n", "4",
                              "--steps", "1", "--ensemble", "none"], capsys)
    assert code in (0, 1) and "non-increasing in eps" in out, err
