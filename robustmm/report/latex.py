"""report.tex: the report's tables as LaTeX (booktabs) for papers.

Built from the blocks of report.md (:mod:`.blocks`), so every number is the one the report shows.
Each pipe table becomes a ``table`` float with ``\\toprule``/``\\midrule``/``\\bottomrule``, its
section heading as the caption and a ``\\label{tab:...}``; long text columns get a paragraph
column so the table keeps a printable width. Text is escaped (``\\ { } _ % & # $ ^ ~``), Markdown
bold and code become ``\\textbf``/``\\texttt``, and the report's symbols (ε, →, —, †, ...)
become LaTeX commands, so the file compiles with pdfLaTeX as well as with XeLaTeX/LuaLaTeX.
The file is a fragment to ``\\input`` from a document that loads ``booktabs``; each tabular sits in
``\\robustmmtable{...}``, a no-op the document may define first (to resize wide tables).
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from .blocks import inline_spans, is_plain_number, parse_blocks

__all__ = ["SPECIALS", "WRAPPER", "latex_escape", "latex_table", "markdown_to_latex"]

#: characters that LaTeX reads as markup, and what stands for each in running text
SPECIALS = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#",
    "$": r"\$", "^": r"\textasciicircum{}", "~": r"\textasciitilde{}",
}

#: the non-ASCII symbols the report writes, as commands that need no package beyond LaTeX's own
SYMBOLS = {
    "—": "---", "–": "--", "→": r"$\rightarrow$", "←": r"$\leftarrow$", "ε": r"$\varepsilon$", "σ": r"$\sigma$",
    "α": r"$\alpha$", "ρ": r"$\rho$", "∞": r"$\infty$", "†": r"\dag{}", "‡": r"\ddag{}", "≥": r"$\geq$",
    "≤": r"$\leq$", "×": r"$\times$", "±": r"$\pm$", "−": "-", "≈": r"$\approx$", "⚠": "(!)", "“": "``", "”": "''",
    "‘": "`", "’": "'", "…": r"\ldots{}", "·": r"$\cdot$", "°": r"$^\circ$", "\u00a0": "~",
}

#: the hook around every tabular: a no-op unless the including document defines it first
WRAPPER = r"\providecommand{\robustmmtable}[1]{#1}"

_LONG = 40  # a column with a cell longer than this many characters becomes a paragraph column


def latex_escape(text: str) -> str:
    """Plain text for LaTeX: the specials escaped and the report's symbols as commands."""
    return "".join(SPECIALS.get(ch) or SYMBOLS.get(ch) or ch for ch in text)


def _inline(text: str) -> str:
    out = []
    for s in inline_spans(text):
        t = latex_escape(s.text)
        out.append(rf"\textbf{{{t}}}" if s.style == "bold" else rf"\emph{{{t}}}" if s.style == "italic"
                   else rf"\texttt{{{t}}}" if s.style == "code" else t)
    return "".join(out)


def _plain(text: str) -> str:
    return "".join(s.text for s in inline_spans(text))


def _label(caption: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", _plain(caption).lower()).strip("-") or "table"
    label, k = base, 2
    while label in taken:
        label, k = f"{base}-{k}", k + 1
    taken.add(label)
    return f"tab:{label}"


def latex_table(headers: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "", label: str = "") -> str:
    """One booktabs ``table`` float of Markdown-inline cells: numeric columns right-aligned, long text
    columns as ``p{...}`` paragraphs, the caption and label when given."""
    spec = []
    for j in range(len(headers)):
        col = [r[j] for r in rows if j < len(r)]
        filled = [c for c in col if _plain(c).strip() not in ("", "—")]
        if filled and all(is_plain_number(c) for c in filled):
            spec.append("r")
        elif any(len(_plain(c)) > _LONG for c in col):
            spec.append(r"p{0.28\linewidth}" if j == len(headers) - 1 else r"p{0.18\linewidth}")
        else:
            spec.append("l")
    lines = [r"\begin{table}[htbp]", r"\centering", r"\small"]
    if caption:
        lines.append(rf"\caption{{{_inline(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\robustmmtable{{\begin{{tabular}}{{{''.join(spec)}}}", r"\toprule",
              " & ".join(_inline(h) for h in headers) + r" \\", r"\midrule"]
    lines += [" & ".join(_inline(c) for c in r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(lines)


def markdown_to_latex(md: str) -> str:
    """Every table of a report's Markdown as a booktabs float, captioned by its section heading (the
    fragment report.tex holds); a comment line when the report has no table."""
    header = ["% robustmm report tables (booktabs). In the preamble: \\usepackage{booktabs}",
              "% Written from the same text as report.md; every number is a fraction in [0, 1] unless named.",
              "% Each tabular is wrapped in \\robustmmtable{...}, which does nothing unless defined before \\input,",
              "% e.g. to fit wide tables to the line (graphicx):",
              "%   \\newcommand{\\robustmmtable}[1]{\\resizebox{\\linewidth}{!}{#1}}",
              WRAPPER, ""]
    heading, out, taken, k = "", [], set(), 0
    for b in parse_blocks(md):
        if b.kind == "heading" and b.level >= 2:
            heading, k = b.text, 0
        elif b.kind == "table":
            k += 1
            caption = heading if k == 1 else f"{heading} ({k})"
            out += [latex_table(b.headers, b.rows, caption, _label(caption, taken)), ""]
    if not out:
        out = ["% (the report has no tables)", ""]
    return "\n".join(header + out)
