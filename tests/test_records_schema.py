"""The record schema is checked on read and on write (robustmm.records.check_record): a field of the
wrong type or out of range is a one-line error naming the file, the line and the field, and
`robustmm report` renders every valid record and refuses every invalid one (a property test)."""
import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import robustmm.records as records
from robustmm.cli import main
from robustmm.errors import ResultFileError
from robustmm.modalities import CONTINUOUS_MODALITIES

RATES = ("zeroshot_top1", "zeroshot_top5", "t2x_R@1", "t2x_R@5", "x2t_R@1", "x2t_MRR")


def record(**changes):
    """A valid robustmm.result/1 record (a PGD result on image) with ``changes`` applied."""
    clean = dict.fromkeys(RATES, 0.75)
    attacked = dict.fromkeys(RATES, 0.25)
    d = {"schema": "robustmm.result/1", "model": {"name": "tinybind"},
         "dataset": {"name": "synthscenes", "split": "test", "size": 8}, "modality": "image",
         "attack": {"name": "pgd", "eps": 4 / 255, "norm": "linf", "steps": 2, "seed": 0}, "defense": None,
         "threat": "white-box",
         "metrics": {"clean": clean, "attacked": attacked, "delta": {k: -0.5 for k in RATES}, "asr": 0.5},
         "n": 8, "seed": 0, "timing_s": 1.5, "versions": {"robustmm": "0", "torch": "0"}}
    d.update(changes)
    return d


def set_path(d, path, value):
    d = copy.deepcopy(d)
    *head, last = path.split(".")
    target = d
    for k in head:
        target = target[k]
    target[last] = value
    return d


#: (field path, a wrong value): the issue's named cases first, then one per field
BAD = [
    ("attack.eps", "4/255"), ("metrics.attacked", [0.5]), ("modality", ["image"]), ("threat", None),
    ("model", "tinybind"), ("metrics.clean.zeroshot_top1", 1.7), ("attack.eps", -1.0),
    ("dataset", None), ("dataset.name", 3), ("n", -1), ("n", 2.5), ("n", True), ("seed", "0"), ("timing_s", -1),
    ("metrics.asr", 1.5), ("metrics.delta.t2x_R@1", -2.0), ("metrics.clean.t2x_R@1", "high"), ("metrics", []),
    ("attack.steps", "ten"), ("attack", "pgd"), ("defense", "calibration"), ("extra", []), ("modality", "smell"),
    ("threat", "grey-box"), ("metrics.clean", None),
]


@pytest.mark.parametrize("path, value", BAD)
def test_check_record_names_the_bad_field(path, value):
    with pytest.raises(records.RecordFieldError) as e:
        records.check_record(set_path(record(), path, value))
    assert e.value.field.split(".")[0] == path.split(".")[0]
    assert "\n" not in str(e.value)


def test_check_record_names_a_missing_field():
    d = record()
    del d["threat"]
    with pytest.raises(records.RecordFieldError, match="field threat: missing"):
        records.check_record(d)


def test_load_results_names_file_line_and_field(tmp_path):
    f = tmp_path / "r.jsonl"
    f.write_text(json.dumps(record()) + "\n" + json.dumps(record(n="8")) + "\n")
    with pytest.raises(ResultFileError) as e:
        records.load_results([f])
    assert str(e.value).startswith(f"{f}: line 2: field n: expected an integer >= 0")
    g = tmp_path / "r.json"
    g.write_text(json.dumps([record(), set_path(record(), "attack.eps", "4/255")]))
    with pytest.raises(ResultFileError, match=r"r.json: record 2: field attack.eps: expected a number >= 0"):
        records.load_results([g])


def test_writers_refuse_what_readers_refuse(tmp_path):
    bad = records.Result.__new__(records.Result)
    bad.__dict__.update({k: v for k, v in record(modality=["image"]).items() if k != "schema"},
                        schema="robustmm.result/1", extra={})
    with pytest.raises(records.RecordFieldError, match="field modality"):
        records.write_json(tmp_path / "r.json", bad)
    assert not (tmp_path / "r.json").exists()


def test_attack_that_attacked_nothing_while_unbroken_items_remained_is_refused():
    """The nested-curve mismatch: eps > 0, n_attacked 0, yet attacked R@1 > 0 (items left unbroken)."""
    d = record(extra={"n_attacked": 0, "n_naive": 8})
    with pytest.raises(records.RecordFieldError, match="extra.n_attacked: 0 items attacked"):
        records.check_record(d)
    records.check_record(record(extra={"n_attacked": 3}))  # attacked some: fine
    broken = set_path(record(extra={"n_attacked": 0}), "metrics.attacked", dict.fromkeys(RATES, 0.0))
    records.check_record(broken)  # nothing left to attack: fine


@pytest.mark.parametrize("path, value", BAD[:7])
def test_report_refuses_a_bad_record_in_one_line(tmp_path, capsys, path, value):
    f = tmp_path / "r.jsonl"
    f.write_text(json.dumps(set_path(record(), path, value)) + "\n")
    assert main(["report", str(f), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert f"{f}: line 1: field {path.split('.')[0]}" in err


rate = st.floats(0, 1, allow_nan=False)
valid_records = st.builds(
    lambda modality, clean, attacked, eps, n, seed, timing: record(
        modality=modality, n=n, seed=seed, timing_s=timing,
        attack={"name": "pgd", "eps": eps, "steps": 2, "seed": seed},
        metrics={"clean": dict(zip(RATES, clean)), "attacked": dict(zip(RATES, attacked)),
                 "delta": {k: a - c for k, a, c in zip(RATES, attacked, clean)}, "asr": None}),
    st.sampled_from(CONTINUOUS_MODALITIES), st.lists(rate, min_size=6, max_size=6),
    st.lists(rate, min_size=6, max_size=6), st.floats(0.0001, 0.5), st.integers(1, 10**6),
    st.integers(0, 2**63 - 1), st.floats(0, 1e6))
invalid_records = st.tuples(valid_records, st.sampled_from(BAD)).map(lambda t: (set_path(t[0], *t[1]), t[1][0]))


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(valid_records, min_size=1, max_size=3), st.one_of(st.none(), invalid_records))
def test_report_renders_valid_records_and_refuses_invalid_ones(tmp_path_factory, valid, invalid):
    """Random valid records render (exit 0, a report.md); one invalid record among them makes
    `robustmm report` refuse the file in one line naming the file, its line and the field (exit 2)."""
    import contextlib
    import io

    d = tmp_path_factory.mktemp("rep")
    rows = valid + ([invalid[0]] if invalid else [])
    (d / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["report", str(d / "r.jsonl"), "--out", str(d / "out"), "-q"])
    if invalid is None:
        assert rc == 0, err.getvalue()
        assert (d / "out" / "report.md").exists()
    else:
        line = err.getvalue().strip()
        assert rc == 2 and "\n" not in line and "Traceback" not in line
        assert f"line {len(rows)}: field {invalid[1].split('.')[0]}" in line
