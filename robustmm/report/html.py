"""report.html: report.md as one self-contained page for a browser.

The page is built from the blocks of the Markdown text itself (:mod:`.blocks`), so it shows
exactly the tables, sentences and figures of report.md. It makes no network request: the CSS
and the table-sorting script are inline, there are no fonts or external scripts, a Content
Security Policy forbids any other source, and figures are the relative ``plots/...`` paths of
report.md, so the page works opened from disk (``file://``) or served from the job folder.

Every table is ``<table class="sortable">``: clicking a header (or Enter/Space on it) sorts the
rows by that column, again to reverse. A cell that stands for a number carries it in
``data-value`` (:func:`~robustmm.report.blocks.numeric_value`), so numeric columns sort as
numbers; empty cells (``—``) sort last either way.
"""
from __future__ import annotations

from collections.abc import Sequence
from html import escape

from .blocks import Block, inline_spans, is_plain_number, numeric_value, parse_blocks

__all__ = ["SORT_SCRIPT", "markdown_to_html", "table_html"]

#: what the page may load: its own inline style and script, and images next to it; nothing else
CSP = ("default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")

STYLE = """
:root { color-scheme: light; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1b1f24;
       background: #fff; margin: 0; }
main { max-width: 1280px; margin: 0 auto; padding: 1.5rem 2rem 4rem; }
h1 { font-size: 1.8rem; border-bottom: 2px solid #d0d7de; padding-bottom: .3rem; }
h2 { font-size: 1.35rem; margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; }
h3 { font-size: 1.1rem; margin-top: 1.6rem; }
p, li { max-width: 75em; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .9em;
            background: #f3f4f6; border-radius: 4px; }
code { padding: .1em .3em; }
pre { padding: .8em 1em; overflow-x: auto; }
nav.toc { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: .6rem 1.2rem; margin: 1rem 0; }
nav.toc ul { margin: .2rem 0; padding-left: 1.2rem; }
.table-wrap { overflow-x: auto; margin: .8rem 0 1.2rem; }
table { border-collapse: collapse; font-size: .88rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: .3rem .55rem; text-align: left; vertical-align: top; }
td.num { text-align: right; white-space: nowrap; }
td { min-width: 4em; }
thead th { background: #f0f3f6; position: sticky; top: 0; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafbfc; }
tbody tr:hover { background: #eef6ff; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th::after { content: " \\2195"; color: #8c959f; font-size: .8em; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; color: #0969da; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; color: #0969da; }
table.sortable th:focus { outline: 2px solid #0969da; outline-offset: -2px; }
figure { margin: 1.2rem 0 2rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { font-size: .85rem; color: #57606a; }
footer { margin-top: 3rem; font-size: .8rem; color: #57606a; }
"""

#: the table sorting, written for this page (no library): numeric when every non-empty cell has data-value
SORT_SCRIPT = """
(function () {
  "use strict";
  function empty(cell) {
    var t = cell ? cell.textContent.trim() : "";
    return t === "" || t === "\\u2014";
  }
  function sortTable(table, col, th) {
    var body = table.tBodies[0];
    if (!body) { return; }
    var rows = Array.prototype.slice.call(body.rows);
    var numeric = rows.some(function (r) { return r.cells[col] && r.cells[col].hasAttribute("data-value"); }) &&
      rows.every(function (r) { var c = r.cells[col]; return empty(c) || c.hasAttribute("data-value"); });
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    var keyed = rows.map(function (r, i) {
      var c = r.cells[col], key = null;
      if (!empty(c)) {
        key = numeric ? parseFloat(c.getAttribute("data-value")) : c.textContent.trim().toLowerCase();
      }
      return { key: key, index: i, row: r };
    });
    keyed.sort(function (a, b) {
      if (a.key === null || b.key === null) {
        return a.key === b.key ? a.index - b.index : (a.key === null ? 1 : -1);
      }
      var d = numeric ? a.key - b.key : a.key.localeCompare(b.key, undefined, { numeric: true });
      return (ascending ? d : -d) || a.index - b.index;
    });
    keyed.forEach(function (k) { body.appendChild(k.row); });
    Array.prototype.forEach.call(th.parentNode.cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    if (!table.tHead) { return; }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.title = "sort by this column (again: reverse)";
      th.addEventListener("click", function () { sortTable(table, col, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortTable(table, col, th); }
      });
    });
  });
}());
"""


def _inline(text: str) -> str:
    """Markdown inline text as HTML (escaped; bold, italic, code, links)."""
    out = []
    for s in inline_spans(text):
        t = escape(s.text, quote=False)
        if s.style == "bold":
            out.append(f"<strong>{t}</strong>")
        elif s.style == "italic":
            out.append(f"<em>{t}</em>")
        elif s.style == "code":
            out.append(f"<code>{t}</code>")
        elif s.style == "link":
            out.append(f'<a href="{escape(s.href)}">{t}</a>')
        else:
            out.append(t)
    return "".join(out)


def table_html(headers: Sequence[str], rows: Sequence[Sequence[str]], caption: str | None = None) -> str:
    """A ``<table class="sortable">`` of Markdown-inline cells: ``<th>`` headers, and each cell that
    stands for a number carrying it in ``data-value`` (what the sorting script compares)."""
    parts = ['<div class="table-wrap"><table class="sortable">']
    if caption:
        parts.append(f"<caption>{_inline(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(f'<th scope="col">{_inline(h)}</th>' for h in headers) + "</tr></thead>")
    parts.append("<tbody>")
    for row in rows:
        cells = []
        for c in row:
            v = numeric_value(c)
            attr = ("" if v is None else f' data-value="{v!r}"') + (' class="num"' if is_plain_number(c) else "")
            cells.append(f"<td{attr}>{_inline(c)}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table></div>")
    return "\n".join(parts)


def _anchor(text: str, taken: set[str]) -> str:
    base = "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-") or "section"
    while "--" in base:
        base = base.replace("--", "-")
    a, k = base, 2
    while a in taken:
        a, k = f"{base}-{k}", k + 1
    taken.add(a)
    return a


def _block_html(b: Block, anchors: dict[int, str]) -> str:
    if b.kind == "heading":
        level = min(max(b.level, 1), 6)
        ident = f' id="{anchors[id(b)]}"' if id(b) in anchors else ""
        return f"<h{level}{ident}>{_inline(b.text)}</h{level}>"
    if b.kind == "table":
        return table_html(b.headers, b.rows)
    if b.kind == "image":
        src = escape(b.src)
        return (f'<figure><a href="{src}"><img src="{src}" alt="{escape(b.text)}" loading="lazy"></a>'
                f"<figcaption>{escape(b.text)}</figcaption></figure>")
    if b.kind == "list":
        return "<ul>\n" + "\n".join(f"<li>{_inline(item)}</li>" for item in b.items) + "\n</ul>"
    if b.kind == "code":
        return f"<pre><code>{escape(b.text, quote=False)}</code></pre>"
    return f"<p>{_inline(b.text)}</p>"


def markdown_to_html(md: str, title: str = "robustmm report") -> str:
    """A whole self-contained HTML page of a Markdown text in the report's subset, with a table of
    contents of its second-level headings, sortable tables and the figures at their relative paths."""
    blocks = parse_blocks(md)
    taken: set[str] = set()
    anchors = {id(b): _anchor(b.text, taken) for b in blocks if b.kind == "heading" and b.level == 2}
    body = []
    toc = [b for b in blocks if id(b) in anchors]
    for i, b in enumerate(blocks):
        body.append(_block_html(b, anchors))
        if i == 0 and b.kind == "heading" and len(toc) > 1:  # the contents right under the title
            body.append('<nav class="toc"><strong>Contents</strong><ul>' + "".join(
                f'<li><a href="#{anchors[id(t)]}">{_inline(t.text)}</a></li>' for t in toc) + "</ul></nav>")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{escape(title)}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        "<main>",
        *body,
        "<footer>Written by robustmm from the same text as report.md. Click a column header to sort a table.</footer>",
        "</main>",
        f"<script>{SORT_SCRIPT}</script>",
        "</body>",
        "</html>",
        "",
    ])
