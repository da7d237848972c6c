"""Progress: bars on a terminal, one log line per finished step elsewhere (`robustmm run` to a file)."""
import logging

import pytest

from robustmm import progress
from robustmm.cli import main


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "robustmm.progress"]


def test_steps_logs_one_line_per_item_when_stderr_is_not_a_terminal(monkeypatch, caplog):
    monkeypatch.delenv("ROBUSTMM_PROGRESS", raising=False)
    monkeypatch.setattr(progress, "bars_wanted", lambda: False)
    with caplog.at_level(logging.INFO, logger="robustmm.progress"):
        assert list(progress.steps(["a", "b", "c"], "work", name=str.upper)) == ["a", "b", "c"]
    lines = _lines(caplog)
    assert len(lines) == 3 and lines[0].startswith("work: A done in ") and "(1/3, 2 left, " in lines[0]
    assert "C done in" in lines[2] and "(3/3, 0 left, " in lines[2]


def test_steps_shows_nothing_when_off_and_no_lines_beside_a_bar(monkeypatch, caplog):
    monkeypatch.setattr(progress, "bars_wanted", lambda: False)
    with caplog.at_level(logging.INFO, logger="robustmm.progress"):
        assert list(progress.steps([1, 2], "work", enabled=False)) == [1, 2]
        monkeypatch.setenv("ROBUSTMM_PROGRESS", "0")
        assert list(progress.steps([1, 2], "work")) == [1, 2]
        monkeypatch.delenv("ROBUSTMM_PROGRESS")
        monkeypatch.setattr(progress, "bars_wanted", lambda: True)  # a terminal: the tqdm bar instead
        assert list(progress.steps([1, 2], "work")) == [1, 2]
    assert _lines(caplog) == []


def test_progress_lines_show_under_the_default_warning_level():
    assert logging.getLogger("robustmm.progress").getEffectiveLevel() == logging.INFO


@pytest.fixture
def one_cell_job(tmp_path, rand_encoder):
    from robustmm.job.registry import cell_kinds

    rand_encoder.save(tmp_path / "model")
    off = "".join(f"[{k.name}]\nenabled = false\n" for k in cell_kinds() if k.name not in ("clean", "run", "report", "attacks"))
    (tmp_path / "job.toml").write_text(f'[run]\nmodel = "tinybind:{tmp_path / "model"}"\nquick_n = 8\n'
                                       f'modalities = ["thermal", "audio"]\nbatch_size = 8\n[report]\nexamples = false\n{off}')
    return tmp_path / "job.toml"


def test_run_redirected_logs_a_line_per_cell(monkeypatch, caplog, one_cell_job, tmp_path):
    """stderr under pytest is not a terminal, like `robustmm run ... 2> log`: no bar, a line per cell."""
    monkeypatch.delenv("ROBUSTMM_PROGRESS", raising=False)
    with caplog.at_level(logging.INFO, logger="robustmm.progress"):
        assert main(["run", str(one_cell_job), "--quick", "--out", str(tmp_path / "out")]) == 0
    lines = _lines(caplog)
    assert len(lines) == 2 and all(s.startswith("robustmm run: ") and " done in " in s for s in lines)
    assert "(1/2, 1 left, " in lines[0] and "(2/2, 0 left, " in lines[1]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="robustmm.progress"):
        assert main(["run", str(one_cell_job), "--quick", "--out", str(tmp_path / "quiet"), "-q"]) == 0
    assert _lines(caplog) == []  # -q: no progress at all
