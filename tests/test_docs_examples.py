"""The documentation's code examples: every fenced ```python block of README.md and docs/**/*.md runs.

The blocks of one file run in order, in one namespace, in a temporary working directory (so files
an example writes land there), offline, on the default ``tinybind`` encoder and ``synthscenes``
data. Each block is its own test, named ``FILE:LINE`` after the line its fence opens on, so a
failure names the block. Use ```pycon or ```text for anything that must not run.
"""
from __future__ import annotations

import os
import re
import traceback
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)

def doc_files() -> list[Path]:
    """README.md and every Markdown file under docs/, in a stable order."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [f for f in files if f.is_file()]


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(line of the opening fence, code) of every ```python block of ``path``."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in FENCE.finditer(text)]


def block_id(path: Path, line: int) -> str:
    """The test id of a block: its file relative to the repository, and the line its fence opens on."""
    return f"{path.relative_to(ROOT).as_posix()}:{line}"


BLOCKS = [(path, line, code) for path in doc_files() for line, code in python_blocks(path)]
_outcomes: dict[Path, dict[int, str | None]] = {}


def run_file(path: Path, tmp_root: Path) -> dict[int, str | None]:
    """Run every block of ``path`` in order in one namespace; line -> None or the error text."""
    namespace: dict[str, object] = {"__name__": "__docs_example__"}
    outcomes: dict[int, str | None] = {}
    workdir = tmp_root / path.relative_to(ROOT).as_posix().replace("/", "_")
    workdir.mkdir(parents=True, exist_ok=True)
    old_cwd = os.getcwd()
    os.chdir(workdir)
    try:
        for line, code in python_blocks(path):
            try:
                exec(compile(code, f"{block_id(path, line)}", "exec"), namespace)  # noqa: S102
                outcomes[line] = None
            except Exception:  # noqa: BLE001 - reported per block below
                outcomes[line] = traceback.format_exc(limit=-3)
    finally:
        os.chdir(old_cwd)
        import matplotlib.pyplot as plt

        plt.close("all")
    return outcomes


def _params() -> list[object]:
    params = []
    for path, line, _ in BLOCKS:
        bid = block_id(path, line)
        params.append(pytest.param(path, line, id=bid))
    return params


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.mark.parametrize(("path", "line"), _params())
def test_docs_example_block_runs(path: Path, line: int, tmp_path_factory: pytest.TempPathFactory) -> None:
    if path not in _outcomes:
        _outcomes[path] = run_file(path, tmp_path_factory.mktemp("docs_examples"))
    error = _outcomes[path][line]
    assert error is None, f"the python block at {block_id(path, line)} failed:\n{error}"


def test_docs_examples_found() -> None:
    assert any(path.name == "README.md" for path, _, _ in BLOCKS), "README.md has no python example"
    assert len({path for path, _, _ in BLOCKS}) >= 3
