"""docs/guides/own-data.md: its ```python blocks run in order, in one namespace, in a fresh folder."""
from __future__ import annotations

import re
import sys
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guides" / "own-data.md"


def test_own_data_guide_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict = {"__name__": "own_data_guide"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{GUIDE.name}[block {i}]", "exec"), namespace)  # noqa: S102 - the guide's own examples
    assert namespace["enc"].name == "mine" and len(namespace["manifest"]) == 6
    sys.modules.pop("mymodels", None)
