"""report.tex: the report's tables as booktabs LaTeX, well formed (balanced braces, one rule of
each kind per table, as many cells as columns) with LaTeX's specials escaped; and `robustmm report
--latex FILE`. When pdflatex is installed, the file also compiles."""
import re
import shutil
import subprocess

import pytest

from robustmm.records import Result, write_jsonl
from robustmm.report.latex import latex_escape, latex_table, markdown_to_latex

NASTY = "my_model#2 & 50% {x} $y ^ ~ \\ ε→"


def rec(modality="image", model=None, attack=None, threat="clean", attacked=None):
    metrics = {"clean": {"zeroshot_top1": 0.5, "t2x_R@1": 0.4}, "attacked": None, "delta": None, "asr": None}
    if attacked is not None:
        metrics["attacked"] = {"zeroshot_top1": attacked, "t2x_R@1": attacked}
        metrics["asr"] = 0.5
    return Result(model=model or {"name": "tinybind"}, dataset={"name": "synth_scenes", "split": "test"},
                  modality=modality, attack=attack, defense=None, threat=threat, metrics=metrics, n=8, seed=0,
                  timing_s=0.1)


def records():
    return [rec(), rec(modality="audio"),
            rec(attack={"name": "apgd", "eps": 4 / 255, "steps": 5, "loss": "ce"}, threat="white-box", attacked=0.25,
                model={"name": NASTY})]


def unescaped(tex: str, ch: str) -> list[str]:
    """Lines with ``ch`` not preceded by a backslash (comment lines and the wrapper's #1 aside)."""
    body = [ln for ln in tex.splitlines() if not ln.startswith("%") and not ln.startswith(r"\providecommand")]
    return [ln for ln in body if re.search(rf"(?<!\\){re.escape(ch)}", ln)]


def assert_well_formed(tex: str) -> None:
    """Balanced braces (escaped ones aside), booktabs rules once per tabular, cells == columns."""
    depth = 0
    for ln in tex.splitlines():
        if ln.startswith("%"):
            continue
        s = re.sub(r"\\[{}]", "", ln)
        for ch in s:
            depth += {"{": 1, "}": -1}.get(ch, 0)
            assert depth >= 0, ln
    assert depth == 0
    tabulars = re.findall(r"\\begin\{tabular\}\{(.*?)\}\n(.*?)\\end\{tabular\}", tex, flags=re.S)
    assert tabulars and tex.count(r"\begin{table}") == tex.count(r"\end{table}") == len(tabulars)
    for spec, body in tabulars:
        ncols = len(re.findall(r"[lrc]|p\{[^}]*\}", re.sub(r"p\{[^}]*\}", "p{}", spec)))
        assert body.count(r"\toprule") == body.count(r"\midrule") == body.count(r"\bottomrule") == 1
        rows = [ln for ln in body.splitlines() if ln.endswith(r"\\")]
        assert rows
        for row in rows:
            assert len(re.findall(r"(?<!\\)&", row)) == ncols - 1, row


def test_latex_escape_escapes_every_special():
    out = latex_escape(NASTY)
    assert out == (r"my\_model\#2 \& 50\% \{x\} \$y \textasciicircum{} \textasciitilde{} \textbackslash{} "
                   r"$\varepsilon$$\rightarrow$")


def test_latex_table_is_booktabs_with_numeric_columns_right_aligned():
    tex = latex_table(["name", "score"], [["a_b", "0.500"], ["**c**", "—"]], "Scores & more", "tab:x")
    assert r"\begin{tabular}{lr}" in tex and r"\textbf{c} & ---" in tex and r"a\_b & 0.500 \\" in tex
    assert r"\caption{Scores \& more}" in tex and r"\label{tab:x}" in tex
    assert_well_formed(tex)


def test_report_tex_of_write_report_is_well_formed_and_escaped(tmp_path):
    from robustmm.job.runner import write_report

    write_report(records(), tmp_path)
    tex = (tmp_path / "report.tex").read_text()
    assert_well_formed(tex)
    for ch in "_%#^~":  # & and $ are markup too: test_ampersands_and_dollars_only_as_markup
        assert unescaped(tex, ch) == [], ch
    assert r"my\_model\#2 \& 50\% \{x\}" in tex
    for caption in ("Clean evaluation", "Attack comparison"):
        assert rf"\caption{{{caption}}}" in tex
    assert tex == markdown_to_latex((tmp_path / "report.md").read_text())


def test_ampersands_and_dollars_only_as_markup(tmp_path):
    """Every unescaped & separates cells and every unescaped $ opens or closes a symbol's math."""
    from robustmm.job.runner import write_report

    write_report(records(), tmp_path)
    tex = (tmp_path / "report.tex").read_text()
    for ln in tex.splitlines():
        if ln.startswith("%"):
            continue
        if re.search(r"(?<!\\)&", ln):
            assert ln.endswith(r"\\"), ln
        maths = re.findall(r"(?<!\\)\$(.*?)(?<!\\)\$", ln)
        assert all(m.startswith("\\") for m in maths), ln


def test_report_command_latex_writes_the_tables_to_a_file(tmp_path, capsys):
    from robustmm.cli import main

    write_jsonl(tmp_path / "r.jsonl", records())
    out = tmp_path / "paper" / "tables.tex"
    assert main(["report", str(tmp_path / "r.jsonl"), "--out", str(tmp_path / "rep"), "--latex", str(out)]) == 0
    assert out.read_text() == (tmp_path / "rep" / "report.tex").read_text()
    assert "tables.tex" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "r.jsonl"), "--out", str(tmp_path / "rep2"), "--latex", "-"]) == 0
    assert capsys.readouterr().out == (tmp_path / "rep2" / "report.tex").read_text()


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed (Debian: texlive-latex-recommended)")
def test_report_tex_compiles_with_pdflatex(tmp_path):
    from robustmm.job.runner import write_report

    write_report(records(), tmp_path)
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n"
                                      "\\begin{document}\n\\input{report.tex}\n\\end{document}\n")
    p = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000
