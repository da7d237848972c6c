"""robustmm.plugins.discover: built-in modules and entry points of a fake installed distribution."""
from __future__ import annotations

import importlib
import sys

import pytest

from robustmm import plugins
from robustmm.errors import RobustMMError

PLUGIN = '''
import torch
from robustmm.data import MultimodalDataset, ZeroShotTask
from robustmm.encoders.registry import load_encoder


def build_encoder(spec="", **kw):
    """A fake family: tinybind under another name."""
    return load_encoder("tinybind")


def load_data(*, split="test", n=None, seed=None, root=None, **kw):
    """A fake dataset of 4 gray images."""
    n = n or 4
    return MultimodalDataset("fakedata", split, [["a"]] * n, tensors={"image": torch.full((n, 3, 8, 8), 0.5)},
                             tasks={"image": ZeroShotTask(torch.zeros(n, dtype=torch.long), ("a", "b"))})
'''


def write_distribution(root, name: str, entry_points: str, module: str = "", module_name: str = "") -> None:
    """A minimal installed distribution: NAME-0.1.dist-info/{METADATA,entry_points.txt} and a module."""
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    if module:
        (root / f"{module_name}.py").write_text(module)


@pytest.fixture
def fresh_discovery(monkeypatch, tmp_path):
    """sys.path with tmp_path first, and every registry rescanned before and after the test."""
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    plugins.forget()
    yield tmp_path
    from robustmm.data.registry import unregister_dataset
    from robustmm.encoders.registry import unregister_encoder

    unregister_encoder("fakeenc")
    unregister_dataset("fakedata")
    sys.modules.pop("fakeplug_mod", None)
    plugins.forget()


def test_discover_loads_entry_points_of_a_fake_distribution(fresh_discovery):
    write_distribution(fresh_discovery, "fakeplug", "[robustmm.encoders]\nfakeenc = fakeplug_mod:build_encoder\n"
                       "[robustmm.datasets]\nfakedata = fakeplug_mod:load_data\n", PLUGIN, "fakeplug_mod")
    import robustmm

    assert "fakeenc" in robustmm.list_encoders() and "fakedata" in robustmm.list_datasets()
    enc = robustmm.load_encoder("fakeenc")
    data = robustmm.load_dataset("fakedata", n=3)
    assert len(data) == 3 and enc.encode("image", data.get("image", slice(None))).shape[0] == 3


def test_discover_runs_once_per_kind(fresh_discovery):
    write_distribution(fresh_discovery, "countplug", "[robustmm.testkind]\nthing = countplug_mod:VALUE\n",
                       "LOADS = []\nLOADS.append(1)\nVALUE = 7\n", "countplug_mod")
    assert plugins.discover("testkind") == {"thing": 7}
    assert plugins.discover("testkind") == {"thing": 7}
    assert sys.modules["countplug_mod"].LOADS == [1]
    sys.modules.pop("countplug_mod", None)


def test_discover_names_a_broken_entry_point_in_one_line(fresh_discovery):
    write_distribution(fresh_discovery, "brokenplug", "[robustmm.testkind]\nbad = no_such_module_xyz:thing\n")
    with pytest.raises(RobustMMError, match=r"entry point 'bad' = 'no_such_module_xyz:thing' .*brokenplug.*"
                       r"ModuleNotFoundError") as err:
        plugins.discover("testkind")
    assert "\n" not in str(err.value)


def test_discover_imports_the_builtin_modules_of_a_package():
    plugins.forget("attacks")
    from robustmm.attacks import list_attacks

    assert {"pgd", "apgd"} <= set(list_attacks())


def test_discover_registers_a_defense_family_from_an_entry_point(fresh_discovery):
    module = ('from robustmm.encoders.input_transforms import defend\n\n\n'
              'def blur_defense(encoder, data=None, **settings):\n'
              '    """A fake defense: JPEG under another name."""\n'
              '    return defend(encoder, "jpeg", **settings)\n')
    write_distribution(fresh_discovery, "defplug", "[robustmm.defenses]\nfakedefense = defplug_mod:blur_defense\n",
                       module, "defplug_mod")
    import robustmm
    from robustmm.defenses.registry import unregister_defense_family
    from robustmm.encoders.base import Encoder

    try:
        assert robustmm.list_defenses()["fakedefense"] == "[plugin] A fake defense: JPEG under another name."
        assert isinstance(robustmm.defend(robustmm.load_encoder("tinybind"), "fakedefense", quality=50), Encoder)
    finally:
        unregister_defense_family("fakedefense")
        sys.modules.pop("defplug_mod", None)
