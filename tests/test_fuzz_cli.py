"""Fuzz pass: the job-config loader and every CLI command's argument parser.

* Config: TOML documents made by mutating ``robustmm/configs/default.toml`` (wrong types per key,
  lists with wrong-typed elements, NaN/inf, negative and huge numbers, datetimes, unknown keys
  and sections, ``[attacks.NAME]`` tables) and then, sometimes, its bytes (truncated, non-UTF-8,
  NUL, BOM, a byte flipped, a line duplicated). ``load_config`` returns a typed config or raises a
  one-line :class:`RobustMMError`; a value of the wrong type is never accepted; and
  ``robustmm run FILE`` on it is exit 2 with one line on stderr.
* CLI: argument lists built from the real flags of every subcommand (read from the parser, so a
  new command or flag is fuzzed too) with valid, hostile and nonsense values, shuffled, plus
  stray tokens. The outcome is exit 0, or exit 2 with exactly one line on stderr, never another
  exception. No long work runs: loading any model or dataset raises ``WorkStarted`` (a
  BaseException no handler catches), which counts as "all inputs accepted".
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

import robustmm
from robustmm.cli import build_parser, main
from robustmm.errors import RobustMMError
from robustmm.job.config import JobConfig, load_config, parse_config

DEFAULT_TOML = Path(robustmm.__file__).parent / "configs" / "default.toml"
BASE = tomllib.loads(DEFAULT_TOML.read_text(encoding="utf-8"))
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)


class WorkStarted(BaseException):  # noqa: N818 - not an error: the signal that every check passed
    """Raised by the stubbed model/dataset loaders: the command accepted its inputs."""


@pytest.fixture
def no_work(monkeypatch, tmp_path):
    """Stub every model and dataset loader (the start of real work), run in an empty folder."""
    return stub_work(monkeypatch, tmp_path)


def stub_work(monkeypatch, tmp_path):
    """What ``no_work`` does (for other test files' fixtures)."""
    import robustmm.data
    import robustmm.data.registry
    import robustmm.encoders
    import robustmm.encoders.registry
    import robustmm.job.context

    def stop(*a, **k):
        raise WorkStarted(a, k)

    for mod in (robustmm.encoders, robustmm.encoders.registry, robustmm.job.context):
        monkeypatch.setattr(mod, "load_encoder", stop)
    for mod in (robustmm.data, robustmm.data.registry, robustmm.job.context):
        monkeypatch.setattr(mod, "load_dataset", stop)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def run_cli(argv: list[str], capsys) -> tuple[int | str, str]:
    """(exit status or "work", stderr) of ``robustmm.cli.main(argv)``; any other exception propagates."""
    capsys.readouterr()
    try:
        rc: int | str = main(argv)
    except WorkStarted:
        rc = "work"
    except SystemExit as e:  # main() must return, not exit; record it as a failure below
        rc = f"SystemExit({e.code})"
    return rc, capsys.readouterr().err


def assert_clean_outcome(argv: list[str], rc: int | str, err: str) -> None:
    """Exit 0, or exit 2 with exactly one non-empty line on stderr; never a traceback."""
    assert "Traceback" not in err, f"{argv}: traceback\n{err}"
    assert rc in (0, 2, "work"), f"{argv}: exit {rc!r}, stderr {err!r}"
    if rc == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].strip(), f"{argv}: exit 2 wants one line on stderr, got {err!r}"


# ---------------------------------------------------------------- TOML documents


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def toml_document(doc: dict) -> str:
    """``doc`` (tables of keys) as TOML; a non-table section value is written as a top-level key."""
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for name, table in doc.items():
        if not isinstance(table, dict):
            continue
        lines.append(f"[{json.dumps(name)}]")
        subs = {k: v for k, v in table.items() if isinstance(v, dict) and name == "attacks"}
        lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items() if k not in subs]
        for sub, t in subs.items():
            lines.append(f"[{json.dumps(name)}.{json.dumps(sub)}]")
            lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in t.items()]
    return "\n".join(lines) + "\n"


NAMES = ["image", "audio", "text", "tinybind", "tinybind-alt", "synthscenes", "ce", "l2", "pgd", "noise", "train", "",
         "nope", "ünï", "tinybind:/nonexistent/m", "open_clip:NOPE@none"]
scalars = st.one_of(
    st.booleans(),
    st.integers(-3, 3),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([10**19, -(10**19), 10**40, 2**64]),  # beyond 64 bits: tomllib still reads them
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, -1.0, 1e308, 1e-320, 0.5, 2.0]),
    st.text(max_size=8),
    st.sampled_from(NAMES),
    st.datetimes(min_value=datetime.datetime(1, 1, 1), max_value=datetime.datetime(9999, 1, 1)),
    st.dates(),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=5), scalars, max_size=2))
SECTIONS = sorted(BASE)
KEYS = [(s, k) for s in SECTIONS for k in BASE[s]]
LIST_KEYS = [(s, k) for s, k in KEYS if isinstance(BASE[s][k], list)]


def _kind(v) -> str:
    return "int" if isinstance(v, int) and not isinstance(v, bool) else type(v).__name__


def wrong_type(default, new) -> bool:
    """Whether ``new`` cannot be a value of a key whose default is ``default`` (ints widen to floats)."""
    if isinstance(default, list):
        if not isinstance(new, list):
            return True
        return bool(default) and any(wrong_type(default[0], x) for x in new)
    if _kind(default) == "float":
        return _kind(new) not in ("float", "int")
    return _kind(new) != _kind(default)


def has_wrong_type(doc) -> bool:
    """Whether the final document puts a wrong-typed value into a known key or section (judged on the
    document as it ends up, so a later drop of the same section or key undoes an earlier mutation)."""
    for s, base in BASE.items():
        if s not in doc or not isinstance(base, dict):
            continue
        if not isinstance(doc[s], dict):
            return True
        if any(k in doc[s] and wrong_type(v, doc[s][k]) for k, v in base.items()):
            return True
    return False


def _set_value(draw, doc) -> None:
    s, k = draw(st.sampled_from(KEYS))
    if s in doc and isinstance(doc[s], dict) and k in doc[s]:
        new = draw(values)
        doc[s][k] = new


def _set_element(draw, doc) -> None:
    s, k = draw(st.sampled_from(LIST_KEYS))
    if s in doc and isinstance(doc[s], dict) and isinstance(doc[s].get(k), list):
        new = draw(scalars)
        lst = doc[s][k]
        if lst and draw(st.booleans()):
            lst[draw(st.integers(0, len(lst) - 1))] = new
        else:
            lst.append(new)


def _unknown_key(draw, doc) -> None:
    s = draw(st.sampled_from(SECTIONS))
    if isinstance(doc.get(s), dict):
        doc[s][draw(st.sampled_from(["stepz", "nn", "", "ü", "quick_enabled"]))] = draw(scalars)


def _unknown_section(draw, doc) -> None:
    doc[draw(st.sampled_from(["pdg", "Run", "", "attacks_", "run.x"]))] = {"enabled": True}


def _drop(draw, doc) -> None:
    s = draw(st.sampled_from(SECTIONS))
    if isinstance(doc.get(s), dict) and doc[s] and draw(st.booleans()):
        doc[s].pop(draw(st.sampled_from(sorted(doc[s]))))
    else:
        doc.pop(s, None)


def _attacks(draw, doc) -> None:
    name = draw(st.sampled_from(["pgd", "noise", "patch", "sga", "xmai", "nope", ""]))
    keys = ["enabled", "modalities", "eps", "n", "quick_n", "fit_n", "quick_fit_n", "settings", "stepz"]
    doc.setdefault("attacks", {})[name] = draw(st.dictionaries(st.sampled_from(keys), values, max_size=3))


def _section_value(draw, doc) -> None:
    doc[draw(st.sampled_from(SECTIONS))] = draw(scalars)


#: the ways a document is changed, each drawing what it changes
DOC_MUTATIONS = {"value": _set_value, "element": _set_element, "unknown key": _unknown_key,
                 "unknown section": _unknown_section, "drop": _drop, "attacks": _attacks, "section value": _section_value}


def _non_utf8(draw, data: bytes, i: int) -> bytes:
    return data[:i] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"])) + data[i:]


def _flip(draw, data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ (1 << draw(st.integers(0, 7)))]) + data[i + 1:] if data else data


def _duplicate_line(draw, data: bytes, i: int) -> bytes:
    lines = data.split(b"\n")
    j = draw(st.integers(0, len(lines) - 1))
    return b"\n".join(lines[: j + 1] + lines[j:])


#: the ways the TOML bytes are damaged at position i
BYTE_MUTATIONS = {
    "truncate": lambda draw, data, i: data[:i],
    "non-utf8": _non_utf8,
    "nul": lambda draw, data, i: data[:i] + b"\x00" + data[i:],
    "bom": lambda draw, data, i: b"\xef\xbb\xbf" + data,
    "flip": _flip,
    "duplicate line": _duplicate_line,
}


@st.composite
def mutated_config(draw):
    """(TOML bytes, whether a wrong-typed value was put into a known key, what was done)."""
    doc = copy.deepcopy(BASE)
    done = []
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(list(DOC_MUTATIONS)))
        DOC_MUTATIONS[how](draw, doc)
        done.append(how)
    wrong = has_wrong_type(doc)
    data = toml_document(doc).encode("utf-8")
    how = draw(st.sampled_from(["none"] * 4 + list(BYTE_MUTATIONS)))
    if how != "none":
        wrong = False  # the oracle only knows about values; the bytes decide now
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        data = BYTE_MUTATIONS[how](draw, data, i)
        done.append(how)
    return data, wrong, done


def test_toml_writer_round_trips_the_default_config():
    """The fuzzer's TOML writer is faithful: the default job written back reads the same."""
    assert tomllib.loads(toml_document(BASE)) == BASE
    assert load_config(DEFAULT_TOML).to_dict() == JobConfig().to_dict()


@FUZZ
@given(case=mutated_config())
def test_config_loader_gives_a_typed_config_or_one_line_error(tmp_path_factory, no_work, capsys, case):
    data, wrong, done = case
    d = tmp_path_factory.mktemp("cfg", numbered=True)
    path = d / "job.toml"
    path.write_bytes(data)
    try:
        cfg = load_config(path)
    except RobustMMError as e:
        msg = str(e)
        assert msg.strip() and "\n" not in msg, f"{done}: {msg!r}"
    else:  # every other exception fails the test (hypothesis shows the document)
        assert not wrong, f"{done}: a wrong-typed value was accepted:\n{data.decode('utf-8', 'replace')}"
        assert parse_config(cfg.to_dict()).to_dict() == cfg.to_dict()
        for v in cfg.run.to_table().values():
            assert not (isinstance(v, float) and not math.isfinite(v))
    (d / "blocker").write_text("a regular file")
    argv = ["run", str(path), "--out", str(d / "blocker" / "out"), "-q"]
    rc, err = run_cli(argv, capsys)
    assert rc == 2, f"{done}: {argv}: exit {rc!r} {err!r}"
    assert_clean_outcome(argv, rc, err)


# ---------------------------------------------------------------- argument lists


def subcommands() -> dict[str, argparse.ArgumentParser]:
    ap = build_parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Inputs for the fuzzer: good and bad result files, configs, heads, a regular file to block --out."""
    d = tmp_path_factory.mktemp("inputs")
    from robustmm.records import Result

    r = Result(model={"name": "m"}, dataset={"name": "synthscenes", "split": "test"}, modality="image", attack=None,
               defense=None, threat="clean", metrics={"clean": {"zeroshot_top1": 0.5, "t2x_R@1": 0.5}}, n=4, seed=0,
               timing_s=0.1)
    (d / "good.json").write_text(r.to_json())
    (d / "good.jsonl").write_text(r.to_json() + "\n" + r.to_json() + "\n")
    (d / "torn.jsonl").write_text(r.to_json() + "\n" + r.to_json()[:40])
    (d / "empty.jsonl").write_text("")
    (d / "junk.bin").write_bytes(b"\xff\xfe\x00junk")
    (d / "newer.json").write_text(json.dumps({**r.to_dict(), "schema": "robustmm.result/99"}))
    (d / "dir").mkdir()
    (d / "blocker").write_text("a regular file: nothing can be created below it")
    off = "".join(f"[{k}]\nenabled = false\n" for k in ("pgd", "patch", "sga", "xmai", "calibration", "checks"))
    (d / "tiny.toml").write_text('[run]\nn = 2\nmodalities = ["thermal"]\n[report]\nexamples = false\n' + off)
    (d / "bad.toml").write_text('[run]\nn = "many"\n')
    (d / "heads.safetensors").write_bytes(b"\x00" * 4)
    (d / "heads.json").write_text("{}")
    return d


HOSTILE = ["", " ", "-", "--", "-1", "0", "nan", "inf", "1e309", "9" * 40, "ü/日本", "x" * 300, "../..", "{model}",
           "{nope}", "{", "%s", "\t", "--help-not", "tinybind", "image"]
INTS = ["1", "2", "0", "-1", "-7", "3.5", "1e3", "", "nan", "9" * 25, "0x10", "１", "+3", " 2"]
FLOATS = ["0.01", "0", "-0.5", "nan", "inf", "-inf", "1e309", "1e-320", "x", "", "0.03", "1/255"]
POOLS = {
    "model": ["tinybind", "tinybind-alt", "nope", "", "tinybind:/nonexistent/m", "open_clip:ViT-B-32@none",
              "hf:/nonexistent", "open_clip:", "tinybind:"],
    "data": ["synthscenes", "cifar10", "coco", "nope", ""],
    "modality": ["image", "thermal", "audio", "pointcloud", "text", "nope", "", "IMAGE"],
    "attack": ["pgd", "noise", "patch", "sga", "xmai", "square", "nope", ""],
    "objective": ["ce", "l2", "infonce", "ce+0.5*l2", "l2@label-free", "nope", "", "ce+nan*l2", "*", "ce+"],
    "split": ["test", "train", "val", "nope", ""],
    "device": ["cpu", "auto", "cuda", "cuda:3", "CPU"],
    "threat": ["head-unaware", "adaptive"],
    "norm": ["linf", "l2"],
    "what": ["models", "attacks", "datasets", "modalities"],
}


def path_pool(files: Path) -> dict[str, list[str]]:
    blocked = str(files / "blocker")
    return {
        "out": [f"{blocked}/o", f"{blocked}/o.json", f"{blocked}/h.safetensors", f"{blocked}/{{model}}", "",
                str(files / "good.json"), str(files / "dir"), "{nope}/x", "{", "x" * 300, f"{blocked}/ü/日本.jsonl"],
        "config": [str(files / "tiny.toml"), str(files / "bad.toml"), str(files / "junk.bin"), str(files / "dir"),
                   str(files / "missing.toml"), "", str(files / "good.json")],
        "results": [str(files / n) for n in ("good.json", "good.jsonl", "torn.jsonl", "empty.jsonl", "junk.bin",
                                             "newer.json", "dir", "missing.jsonl")] + [""],
        "heads": [str(files / "heads.safetensors"), str(files / "missing"), str(files / "dir"), "", str(files / "junk.bin")],
        "root": [str(files / "dir"), "/nonexistent", ""],
    }


def _value(draw, action: argparse.Action, paths: dict[str, list[str]]):
    dest = action.dest
    if action.choices and draw(st.integers(0, 4)):
        return draw(st.sampled_from(sorted(action.choices)))
    pool = paths.get(dest) or POOLS.get(dest)
    if dest in ("source", "surrogate"):
        pool = POOLS["model"]
    if action.type is int:
        pool = INTS
    elif action.type is float:
        pool = FLOATS
    if pool and draw(st.integers(0, 3)):
        return draw(st.sampled_from(pool))
    return draw(st.one_of(st.sampled_from(HOSTILE), st.text(st.characters(blacklist_categories=["Cs"],
                                                                         blacklist_characters="\x00"), max_size=6)))


@st.composite
def argument_lists(draw, files: Path, command: str | None = None, force: str | None = None):
    """An argument list of one subcommand (``command``, else any) built from its parser's actions;
    a random optional one (or the one whose first flag is ``force``) is always among them."""
    cmds = subcommands()
    paths = path_pool(files)
    name = command or draw(st.sampled_from(sorted(cmds)))
    parser = cmds[name]
    argv: list[list[str]] = []
    actions = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]

    def required(a):
        return a.required or (not a.option_strings and a.nargs not in ("?", "*"))

    optional = [a for a in actions if not required(a)]
    chosen = draw(st.lists(st.sampled_from(optional), unique_by=id, max_size=5)) if optional else []
    forced = next((a for a in actions if a.option_strings and a.option_strings[0] == force), None)
    if forced is not None:
        chosen.append(forced)
    elif optional:
        chosen.append(draw(st.sampled_from(optional)))
    for action in actions:
        if not required(action) and action not in chosen:
            continue
        if required(action) and action is not forced and not draw(st.integers(0, 15)):
            continue  # sometimes leave out a required one
        flag = [draw(st.sampled_from(action.option_strings))] if action.option_strings else []
        if action.nargs == 0:  # store_true / count
            argv.append(flag * draw(st.integers(1, 2)))
            continue
        n = {None: 1, "?": 1, "+": draw(st.integers(1, 3)), "*": draw(st.integers(0, 3))}.get(action.nargs, 1)
        argv.append(flag + [_value(draw, action, paths) for _ in range(n)])
    if draw(st.integers(0, 5)) == 0:  # stray tokens: unknown flags, other commands' flags, a positional
        argv.append([draw(st.sampled_from(["--nope", "-x", "stray", "--out", "--n", "--eps", "--modality", "-vvv",
                                           "--quick", "--resume", "--amp", "--", "-q"]))])
    order = draw(st.permutations(range(len(argv))))
    out = [name]
    for i in order:
        out += argv[i]
    return out


@FUZZ
@given(data=st.data())
def test_every_command_parses_to_exit_0_or_a_one_line_exit_2(files, no_work, capsys, data):
    argv = data.draw(argument_lists(files))
    rc, err = run_cli(argv, capsys)
    assert_clean_outcome(argv, rc, err)


def test_the_fuzzer_reaches_every_command_and_flag(files):
    """The argument fuzzer is built from the parser: it can draw every subcommand with each of its flags."""
    pairs = [(name, a.option_strings) for name, p in subcommands().items() for a in p._actions
             if a.option_strings and not isinstance(a, argparse._HelpAction)]
    assert {n for n, _ in pairs} >= {"run", "eval", "calibrate", "report", "check-attack"}

    @settings(max_examples=2, deadline=None, database=None, phases=[Phase.generate])
    @given(data=st.data())
    def draw_each(data):
        for name, flags in pairs:
            argv = data.draw(argument_lists(files, name, flags[0]))
            assert argv[0] == name and set(flags) & set(argv), (name, flags, argv)

    draw_each()


@pytest.mark.parametrize("argv", [["--version"], ["list", "models"], ["run", "--help"], ["eval", "--help"],
                                  ["calibrate", "--help"], ["report", "--help"], ["check-attack", "--help"],
                                  ["list", "--help"], ["--help"]])
def test_help_and_listing_exit_0(no_work, capsys, argv):
    rc, err = run_cli(argv, capsys)
    assert rc == 0 and err == "", (argv, rc, err)


@FUZZ
@given(args=st.lists(st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=10),
                     max_size=6))
def test_any_tokens_at_all(no_work, capsys, args):
    """Not even a command name: arbitrary tokens are exit 0 or a one-line exit 2 (no tokens at
    all is test_hostile_user.py::test_no_command_is_a_one_line_error)."""
    assume(args)
    rc, err = run_cli(args, capsys)
    assert_clean_outcome(args, rc, err)
