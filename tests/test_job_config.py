"""The typed job config: defaults in one place, every key's type and range checked with a
one-line message naming file, section, key and expected type, quick_KEY picks."""
import pytest

from robustmm.cli import main
from robustmm.errors import RobustMMError, UnknownNameError
from robustmm.job import load_config, parse_config
from robustmm.job.config import JobConfig
from robustmm.job.sections import ConfigError

DEFAULT_TOML = __import__("pathlib").Path(__file__).resolve().parent.parent / "robustmm" / "configs" / "default.toml"


def test_default_toml_lists_exactly_the_code_defaults():
    """default.toml is documentation of the dataclass defaults; it must not drift from them."""
    assert load_config(DEFAULT_TOML).to_dict() == load_config(None).to_dict()
    assert load_config(None).to_dict() == JobConfig().to_dict()


def test_round_trip_and_widening():
    cfg = parse_config({"sga": {"eps": 0}, "pgd": {"steps": 3}, "run": {"modalities": ["audio"]}})
    assert cfg.section("sga").eps == 0.0 and isinstance(cfg.section("sga").eps, float)
    assert parse_config(cfg.to_dict()).to_dict() == cfg.to_dict()
    assert cfg.section("patch").area == 0.03  # left-out keys take their default
    assert cfg.run.modalities == ["audio"]


@pytest.mark.parametrize("raw, needle", [
    ({"pgd": {"steps": "ten"}}, '[pgd] steps: expected an integer >= 0, got "ten"'),
    ({"pgd": {"steps": -1}}, "[pgd] steps: expected an integer >= 0, got -1"),
    ({"pgd": {"steps": 2.5}}, "[pgd] steps: expected an integer >= 0, got 2.5"),
    ({"run": {"n": 0}}, "[run] n: expected an integer > 0, got 0"),
    ({"run": {"seed": True}}, "[run] seed: expected an integer >= 0 and <= 9223372036854775807, got True"),
    ({"run": {"amp": "yes"}}, '[run] amp: expected a boolean (true/false), got "yes"'),
    ({"run": {"modalities": "image"}}, '[run] modalities: expected a list of strings, got "image"'),
    ({"run": {"modalities": ["image", 3]}}, "[run] modalities[1]: expected a string, got 3"),
    ({"checks": {"steps": [1, "5"]}}, '[checks] steps[1]: expected an integer >= 0, got "5"'),
    ({"sga": {"eps": float("inf")}}, "[sga] eps: expected a number >= 0, got inf"),
    ({"sga": {"eps": float("nan")}}, "[sga] eps: expected a number >= 0, got nan"),
    ({"patch": {"area": 0}}, "[patch] area: expected a number > 0 and < 1, got 0"),
    ({"checks": {"tolerance": "0.1"}}, '[checks] tolerance: expected a number >= 0 and <= 1, got "0.1"'),
    ({"patch": {"area": 1}}, "[patch] area: expected a number > 0 and < 1, got 1.0"),
    ({"run": {"modalities": []}}, "[run] modalities: expected a non-empty list of strings, got []"),
    ({"run": {"split": "tset"}}, '[run] split: expected a split of synthscenes (train, val, test), got "tset"'),
    ({"run": {"root": 3}}, "[run] root: expected a string, got 3"),
    ({"pgd": 3}, "[pgd]: expected a table of keys, got 3"),
    ({"report": {"examples": 1}}, "[report] examples: expected a boolean"),
])
def test_wrong_type_or_range_names_section_key_and_type(raw, needle):
    with pytest.raises(ConfigError) as e:
        parse_config(raw, "job.toml")
    assert needle in str(e.value) and str(e.value).startswith("job.toml: ")


@pytest.mark.parametrize("raw, needle", [
    ({"pdg": {}}, "did you mean '[pgd]'"),
    ({"pgd": {"stesp": 3}}, "did you mean 'steps'"),
    ({"run": {"model": "tinybnd"}}, "did you mean 'tinybind'"),
    ({"run": {"dataset": "synthscene"}}, "did you mean 'synthscenes'"),
    ({"run": {"modalities": ["imagee"]}}, "did you mean 'image'"),
    ({"sga": {"transfer_to": ["tinybind-alt", "tinybnd-alt"]}}, "did you mean 'tinybind"),
    ({"checks": {"surrogate": "tinybnd"}}, "did you mean 'tinybind"),
    ({"patch": {"modality": "imag"}}, "did you mean 'image'"),
    ({"calibration": {"objectives": ["ce", "l3"]}}, "l3"),
    ({"attacks": {"pgdd": {}}}, "did you mean 'pgd'"),
    ({"attacks": {"pgd": {"settings": {"stesp": 3}}}}, "did you mean 'steps'"),
    ({"attacks": {"pgd": {"eps": [-1]}}}, "[attacks.pgd] eps[0]: expected a number >= 0, got -1"),
    ({"attacks": {"pgd": {"modalities": ["smell"]}}}, "unknown modality 'smell'"),
])
def test_unknown_names_are_caught_at_load(raw, needle):
    with pytest.raises(RobustMMError) as e:
        parse_config(raw, "job.toml")
    assert needle in str(e.value)


def test_empty_surrogate_means_no_transfer_check():
    assert parse_config({"checks": {"surrogate": ""}}).section("checks").surrogate == ""


def test_section_pick_takes_quick_values_in_quick_mode():
    cfg = parse_config({"pgd": {"steps": 7}, "calibration": {"steps": 9, "quick_steps": 2}})
    pgd, cal = cfg.section("pgd"), cfg.section("calibration")
    assert (pgd.pick("steps", False), pgd.pick("steps", True)) == (7, 5)  # quick_steps keeps its default
    assert (cal.pick("steps", False), cal.pick("steps", True)) == (9, 2)
    assert (pgd.pick("retrieval_n", False), pgd.pick("retrieval_n", True)) == (100, 24)
    assert cfg.section("checks").pick("steps", True) == [1, 3, 5]


def test_unknown_section_lists_registered_kinds():
    with pytest.raises(UnknownNameError) as e:
        parse_config({"nope": {}})
    for kind in ("[clean]", "[pgd]", "[attacks]", "[checks]", "[run]", "[report]"):
        assert kind in str(e.value)


@pytest.mark.parametrize("content, needle", [
    (b"[run]\nmodel = \"tinybind\xff\"\n", "not a UTF-8 text file"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "not a UTF-8 text file"),
    (b"[run\n", "invalid TOML"),
    (b"[pgd]\nsteps = \"ten\"\n", 'steps: expected an integer >= 0, got "ten"'),
    (b"[run]\nmodalities = [\"image\", 1.5]\n", "modalities[1]: expected a string, got 1.5"),
])
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, capsys, content, needle):
    path = tmp_path / "job.toml"
    path.write_bytes(content)
    with pytest.raises(RobustMMError) as e:
        load_config(path)
    assert str(path) in str(e.value) and needle in str(e.value)
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing started


def test_a_folder_as_config_is_one_line(tmp_path):
    with pytest.raises(RobustMMError, match="is a folder"):
        load_config(tmp_path)


def _values():
    from hypothesis import strategies as st

    scalar = st.one_of(st.none(), st.booleans(), st.integers(-3, 3000), st.floats(allow_nan=True, allow_infinity=True),
                       st.text(max_size=12), st.sampled_from(["image", "tinybind", "ce", "synthscenes", "train"]))
    return st.one_of(scalar, st.lists(scalar, max_size=3), st.dictionaries(st.text(max_size=6), scalar, max_size=2))


def test_fuzz_any_tables_give_a_config_or_a_one_line_error():
    """Whatever tables a TOML file holds, loading gives a typed config or a one-line RobustMMError."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from robustmm.job.config import FIXED
    from robustmm.job.registry import cell_kinds

    sections = [*FIXED, *(k.name for k in cell_kinds()), "pdg"]
    keys = sorted({k for s in JobConfig().to_dict().values() for k in s} | {"quick_steps", "settings", "nope"})
    table = st.dictionaries(st.sampled_from(keys), _values(), max_size=4)

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(st.sampled_from(sections), st.one_of(table, _values()), max_size=3))
    def check(raw):
        try:
            cfg = parse_config(raw, "fuzz.toml")
        except RobustMMError as e:
            assert "\n" not in str(e) and str(e)
        else:
            assert parse_config(cfg.to_dict()).to_dict() == cfg.to_dict()

    check()


def test_an_explicit_none_survives_the_round_trip():
    cfg = parse_config({"run": {"quick_n": None}})
    assert cfg.run.quick_n is None
    assert parse_config(cfg.to_dict()).run.quick_n is None
