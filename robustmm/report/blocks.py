"""The report's Markdown as a list of blocks (headings, paragraphs, pipe tables, images, lists,
code), so that report.html and the LaTeX tables are built from the very text report.md holds and
can never say something else.

Only the subset :mod:`.markdown` writes is understood: ATX headings, GitHub pipe tables (as
:func:`~robustmm.report.tables.markdown_table` writes them), ``![alt](src)`` lines, ``-``/``*``
list items, fenced code and paragraphs; inline ``**bold**``, ``*italic*``, backtick code and
``[text](url)`` links. Anything else is a paragraph of plain text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Block", "Span", "inline_spans", "is_plain_number", "numeric_value", "parse_blocks", "split_row"]

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)\s*$")
_ITEM = re.compile(r"^\s*[-*]\s+(.*)$")
_SEPARATOR = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_INLINE = re.compile(r"(\*\*.+?\*\*|`[^`]+`|\[[^\]]+\]\([^)\s]+\)|(?<![\w*])\*[^*\s][^*]*?\*(?![\w*]))")
_NUMBER = r"[-+−]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PLAIN_NUMBER = re.compile(rf"^({_NUMBER})\s*(%?)$")
_FRACTION = re.compile(r"^(\d+)/(\d+)$")  # a budget such as 4/255
_LABELLED_NUMBER = re.compile(rf"^[^:]{{1,40}}:\s*({_NUMBER})\s*(%?)(?:\s|$)")


@dataclass(frozen=True)
class Block:
    """One block of the report: ``kind`` is heading, paragraph, table, image, list or code.

    ``text`` holds a heading's or paragraph's text, an image's alt text or the code; ``level`` a
    heading's depth; ``headers``/``rows`` a table's cells (Markdown inline text); ``items`` a
    list's entries; ``src`` an image's path."""

    kind: str
    text: str = ""
    level: int = 0
    headers: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    items: tuple[str, ...] = ()
    src: str = ""


@dataclass(frozen=True)
class Span:
    """A run of inline text: ``style`` is plain, bold, italic, code or link (``href`` set)."""

    text: str
    style: str = "plain"
    href: str = field(default="")


def split_row(line: str) -> tuple[str, ...]:
    """The cells of one pipe-table line, stripped (``\\|`` stays a literal bar inside a cell)."""
    s = line.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|") and not s.endswith("\\|"):
        s = s[:-1]
    cells = re.split(r"(?<!\\)\|", s)
    return tuple(c.strip().replace("\\|", "|") for c in cells)


def parse_blocks(md: str) -> list[Block]:
    """The blocks of a Markdown text, in order (see the module docstring for the subset)."""
    lines = md.splitlines()
    blocks: list[Block] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            blocks.append(Block("paragraph", text=" ".join(s.strip() for s in para)))
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            flush()
            i += 1
        elif line.lstrip().startswith("```"):
            flush()
            j = i + 1
            while j < len(lines) and not lines[j].lstrip().startswith("```"):
                j += 1
            blocks.append(Block("code", text="\n".join(lines[i + 1:j])))
            i = j + 1
        elif m := _HEADING.match(line):
            flush()
            blocks.append(Block("heading", text=m.group(2), level=len(m.group(1))))
            i += 1
        elif line.lstrip().startswith("|") and i + 1 < len(lines) and _SEPARATOR.match(lines[i + 1]):
            flush()
            table, i = _table(lines, i)
            blocks.append(table)
        elif m := _IMAGE.match(line.strip()):
            flush()
            blocks.append(Block("image", text=m.group(1), src=m.group(2)))
            i += 1
        elif _ITEM.match(line) and not para:
            items = []
            while i < len(lines) and (m := _ITEM.match(lines[i])):
                items.append(m.group(1).strip())
                i += 1
            blocks.append(Block("list", items=tuple(items)))
        else:
            para.append(line)
            i += 1
    flush()
    return blocks


def _table(lines: list[str], i: int) -> tuple[Block, int]:
    """The pipe table whose header is ``lines[i]``, and the index of the line after it (rows are
    padded or cut to the header's width)."""
    headers = split_row(lines[i])
    j = i + 2
    rows = []
    while j < len(lines) and lines[j].lstrip().startswith("|"):
        cells = split_row(lines[j])
        rows.append((cells + ("",) * len(headers))[:len(headers)])
        j += 1
    return Block("table", headers=headers, rows=tuple(rows)), j


def inline_spans(text: str) -> list[Span]:
    """``text`` cut into plain, bold, italic, code and link spans (no nesting: the report never nests)."""
    spans: list[Span] = []
    pos = 0
    for m in _INLINE.finditer(text):
        if m.start() > pos:
            spans.append(Span(text[pos:m.start()]))
        tok = m.group(0)
        if tok.startswith("**"):
            spans.append(Span(tok[2:-2], "bold"))
        elif tok.startswith("`"):
            spans.append(Span(tok[1:-1], "code"))
        elif tok.startswith("["):
            label, href = re.match(r"\[([^\]]+)\]\(([^)\s]+)\)", tok).groups()  # type: ignore[union-attr]
            spans.append(Span(label, "link", href))
        else:
            spans.append(Span(tok[1:-1], "italic"))
        pos = m.end()
    if pos < len(text):
        spans.append(Span(text[pos:]))
    return spans


def numeric_value(cell: str) -> float | None:
    """The number a table cell stands for when sorting: a plain number (``0.412``, ``12%``), a
    fraction (a budget, ``4/255``) or the first number after a short label (``4/255: **0.120**
    (PGD-10: 0.2)`` -> 0.12); None for an empty cell (``—``) or text."""
    plain = "".join(s.text for s in inline_spans(cell)).strip()
    if (f := _FRACTION.match(plain)) and int(f.group(2)):
        return int(f.group(1)) / int(f.group(2))
    m = _PLAIN_NUMBER.match(plain) or _LABELLED_NUMBER.match(plain)
    if m is None:
        return None
    v = float(m.group(1).replace("−", "-"))
    return v / 100 if m.group(2) else v


def is_plain_number(cell: str) -> bool:
    """Whether a table cell is just a number (``0.412``, ``-3``, ``12%``, ``4/255``), markup aside."""
    plain = "".join(s.text for s in inline_spans(cell)).strip()
    return _PLAIN_NUMBER.match(plain) is not None or _FRACTION.match(plain) is not None
