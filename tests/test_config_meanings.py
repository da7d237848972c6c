"""Job-file values whose meaning depends on other keys, refused at load in one line: the splits of
the real datasets (declared, so no files are needed to check them), a section's modalities that
``[run]`` does not run, and the seeds of free-form settings tables."""
import logging

import pytest

from robustmm.data.files import choose_subset
from robustmm.data.registry import dataset_splits, load_dataset
from robustmm.errors import RobustMMError, UnknownNameError
from robustmm.job import cell_kinds, parse_config
from robustmm.job.config import MAX_SEED
from robustmm.job.sections import ConfigError

REAL = ["cifar10", "cifar100", "esc50", "coco", "flickr30k", "llvip", "msrvtt", "nyu_depth_v2"]


def refused(raw: dict, needle: str) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(raw, "job.toml")
    msg = str(e.value)
    assert needle in msg, msg
    assert msg.startswith("job.toml: ") and "\n" not in msg
    return msg


# -- the real datasets declare their splits ------------------------------------------------------
@pytest.mark.parametrize("name", REAL)
def test_unknown_split_of_a_real_dataset_is_refused_at_load_without_files(name):
    msg = refused({"run": {"dataset": name, "root": "/no/such/folder", "split": "validation"}},
                  f"[run] split: expected a split of {name} (")
    assert all(s in msg for s in dataset_splits(name))


@pytest.mark.parametrize("name", REAL)
def test_the_loader_accepts_exactly_the_declared_splits(name, tmp_path):
    """Declared split names reach the files (missing here), any other name is the loader's
    unknown-split error: registry and loader agree."""
    for split in dataset_splits(name):
        with pytest.raises(RobustMMError) as e:
            load_dataset(name, split=split, root=str(tmp_path))
        assert not isinstance(e.value, UnknownNameError), f"{name} refuses its declared split {split!r}: {e.value}"
    with pytest.raises(UnknownNameError, match="split"):
        load_dataset(name, split="validation", root=str(tmp_path))


@pytest.mark.parametrize("raw, needle", [
    ({"run": {"dataset": "cifar10", "root": "/d", "n": 10_001}},
     "[run] n: expected an integer <= 10000 (the size of cifar10 split 'test'), got 10001"),
    ({"run": {"dataset": "esc50", "root": "/d", "split": "val"}}, "[run] n: expected an integer <= 400"),
    ({"run": {"dataset": "msrvtt", "root": "/d"}, "calibration": {"train_split": "val"}},
     '[calibration] train_split: expected a split of msrvtt (test, train), got "val"'),
    ({"run": {"dataset": "flickr30k", "root": "/d", "split": "restval"}}, "expected a split of flickr30k"),
    ({"run": {"dataset": "coco", "root": "/d", "modalities": ["image"]}, "patch": {"fit_n": 200_000}},
     "[patch] fit_n: expected an integer <= 113287"),
])
def test_fixed_split_sizes_bound_item_counts_at_load(raw, needle):
    refused(raw, needle)


def test_folder_datasets_check_names_only_and_count_at_load(caplog):
    """llvip and nyu_depth_v2 count their items on disk: any count loads, and a split holding
    fewer items than asked keeps all of them, with a warning naming it."""
    for name in ("llvip", "nyu_depth_v2"):
        assert set(dataset_splits(name)) == {"train", "test", "val"}
        assert all(size is None for size in dataset_splits(name).values())
        assert parse_config({"run": {"dataset": name, "root": "/d", "n": 10**7}}).run.n == 10**7
    with caplog.at_level(logging.WARNING, logger="robustmm.data.files"):
        index, _ = choose_subset(5, 8, 0, "nyu_depth_v2/test")
    assert list(index) == [0, 1, 2, 3, 4]
    assert "nyu_depth_v2/test holds 5 items, fewer than the 8 asked for" in caplog.text


# -- a section's modalities must be among [run] modalities ---------------------------------------
ONLY_IMAGE = {"run": {"modalities": ["image"]}}


@pytest.mark.parametrize("section", ["input_defenses", "ensemble", "certification", "calibration", "checks"])
def test_a_section_modality_outside_run_is_refused_at_load(section):
    refused(ONLY_IMAGE | {section: {"modalities": ["image", "audio"]}},
            f'[{section}] modalities: "audio" is not in [run] modalities (image)')


def test_an_attack_table_modality_outside_run_is_refused_at_load():
    refused(ONLY_IMAGE | {"attacks": {"pgd": {"modalities": ["depth"]}}},
            '[attacks.pgd] modalities: "depth" is not in [run] modalities (image)')


def test_every_section_with_modalities_has_the_check():
    """A new kind with a ``modalities`` key gets the same rule (``option(..., in_run="modalities")``)."""
    from robustmm.job.cells.attacks import AttackCellConfig

    configs = [k.Config for k in cell_kinds() if getattr(k, "Config", None) is not None] + [AttackCellConfig]
    with_key = [c for c in configs if "modalities" in c.keys()]
    assert len(with_key) >= 6
    assert all(c.rules()["modalities"].in_run == "modalities" for c in with_key)


def test_a_default_that_misses_run_only_warns_and_a_disabled_section_is_not_checked(caplog):
    """``[input_defenses]`` defaults to image: an audio job leaving it alone loads (the section
    runs nothing, and the log says so); a section switched off runs nothing and is not checked."""
    with caplog.at_level(logging.WARNING, logger="robustmm.job.config"):
        parse_config({"run": {"modalities": ["audio"]}}, "job.toml")
    assert "[input_defenses] modalities: none of the default image is in [run] modalities (audio)" in caplog.text
    parse_config(ONLY_IMAGE | {"ensemble": {"enabled": False, "modalities": ["audio"]}})
    parse_config(ONLY_IMAGE | {"ensemble": {"modalities": ["image"]}, "certification": {"modalities": []}})


# -- seeds of settings tables are bounded like [run] seed ----------------------------------------
@pytest.mark.parametrize("seed", [2**64, MAX_SEED + 1, -1, True, 1.5, "3"])
def test_attack_setting_seed_is_bounded_like_run_seed(seed):
    refused({"attacks": {"pgd": {"settings": {"seed": seed}}}},
            f"[attacks.pgd] settings.seed: expected an integer >= 0 and <= {MAX_SEED}, got ")


def test_attack_setting_seed_at_the_bound_loads():
    cfg = parse_config({"attacks": {"pgd": {"settings": {"seed": MAX_SEED}}}})
    assert cfg.section("attacks")["pgd"].settings["seed"] == MAX_SEED


def test_an_input_defenses_modality_no_defense_applies_to_is_refused_at_load():
    refused({"run": {"modalities": ["image", "audio"]}, "input_defenses": {"modalities": ["image", "audio"],
                                                                          "defenses": ["jpeg"]}},
            "[input_defenses] modalities: none of the defenses (jpeg) applies to 'audio'")
    parse_config({"run": {"modalities": ["image", "audio"]},  # bit-depth applies to audio: jpeg is skipped there
                  "input_defenses": {"modalities": ["image", "audio"], "defenses": ["jpeg", "bit-depth"]}})
