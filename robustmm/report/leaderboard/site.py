"""HTML of the leaderboard site: the index (sortable tables, overview curves) and a page per entry.

Every page is one self-contained file: inline ``<style>`` and one inline ``<script>`` (the table
sorter below, written here), links and images relative to the page, nothing fetched from
anywhere. Numbers are shown as percentages; the cell's ``data-value`` holds the fraction.
"""
from __future__ import annotations

import html
import json
import logging
import re
from pathlib import Path
from typing import Any

from ...persist import atomic_write_text
from ..plots.style import modality_order
from .plots import plot_certified_curves, plot_entry_curves, plot_modality_overview

log = logging.getLogger(__name__)

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:72em;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:right}
th{background:#f2f2f2}
td.name,th.name,td.text{text-align:left}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
td.na{color:#999}
img{max-width:100%;border:1px solid #eee}
.note{color:#666;font-size:0.9em}
code{background:#f6f6f6;padding:0 0.2em}
"""

#: the table sorter: click a header to sort by its column (numbers by data-value, cells without one last)
SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var desc = th.getAttribute("aria-sort") !== "descending";
      table.querySelectorAll("thead th").forEach(function (o) { o.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", desc ? "descending" : "ascending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[col];
        if (!cell) { return null; }
        if (cell.hasAttribute("data-value")) { return parseFloat(cell.getAttribute("data-value")); }
        return cell.classList.contains("na") ? null : cell.textContent.trim().toLowerCase();
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || (typeof x === "number" && isNaN(x))) { return 1; }
        if (y === null || (typeof y === "number" && isNaN(y))) { return -1; }
        var c = x < y ? -1 : (x > y ? 1 : 0);
        return desc ? -c : c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def entry_slug(path: str | Path, taken: set[str] | None = None) -> str:
    """A file-name-safe, unique page name for the entry stored at ``path`` (its stem)."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(path).stem).strip("-.") or "entry"
    slug, i = base, 2
    while taken is not None and slug in taken:
        slug, i = f"{base}-{i}", i + 1
    if taken is not None:
        taken.add(slug)
    return slug


def esc(v: Any) -> str:
    """HTML-escaped text of ``v``."""
    return html.escape(str(v), quote=True)


def num_cell(v: float | None, digits: int = 1) -> str:
    """A numeric ``<td>``: the percentage shown, the fraction in ``data-value``; none: ``n/a``."""
    if v is None:
        return '<td class="na">n/a</td>'
    return f'<td data-value="{float(v):.6g}">{100 * float(v):.{digits}f}</td>'


def int_cell(v: int | None) -> str:
    """A count ``<td>`` (``data-value`` the count)."""
    return '<td class="na">n/a</td>' if v is None else f'<td data-value="{int(v)}">{int(v):,}</td>'


def page(title: str, body: str) -> str:
    """One self-contained HTML page."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{esc(title)}</title>\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            '<link rel="icon" href="data:,">\n'  # no favicon request (a 404 in the console when served)
            f'<style>{CSS}</style>\n</head>\n'
            f"<body>\n{body}\n<script>{SORT_SCRIPT}</script>\n</body>\n</html>\n")


def _protocol_label(entry: dict[str, Any]) -> str:
    p = entry["provenance"]["protocol"]
    quick = " (quick: not the protocol)" if p.get("quick") else ""
    return f"{p['name']} v{p['version']} ({p['sha256'][:12]}){quick}"


def _modalities(entries: list[dict[str, Any]]) -> list[str]:
    return sorted({m for e in entries for m in e["modalities"]}, key=modality_order)


def grid_mean(entry: dict[str, Any]) -> float | None:
    """Mean robust accuracy over every modality's whole eps grid (a secondary column: it still
    ranks models where the headline budget breaks them all); None when a number is missing."""
    vals = [c["robust"] for num in entry["modalities"].values() for c in num["robust"]]
    return None if not vals or any(v is None for v in vals) else sum(vals) / len(vals)


def overall_table(entries: list[tuple[str, dict[str, Any]]], mods: list[str]) -> str:
    """The overall table: one row per entry, headline robust, clean, each modality's headline."""
    head = ('<tr><th class="name">model</th><th>robust (headline)</th><th>clean</th><th>mean over eps grid</th>'
            + "".join(f"<th>{esc(m)}</th>" for m in mods)
            + "<th>parameters</th><th>trained share</th><th>defense</th></tr>")
    rows = []
    for slug, e in entries:
        card, h = e["model"], e["headline"]
        defense = card["defense"]["name"] if card["defense"] else "none"
        rows.append(f'<tr><td class="name"><a href="entries/{esc(slug)}.html">{esc(card["name"])}</a></td>'
                    + num_cell(h["robust"]) + num_cell(h["clean"]) + num_cell(grid_mean(e))
                    + "".join(num_cell(h["per_modality"].get(m)) for m in mods)
                    + int_cell(card["parameters"]) + num_cell(card["trainable_share"], 2)
                    + f'<td class="text">{esc(defense)}</td></tr>')
    return (f'<table class="sortable" id="overall">\n<thead>{head}</thead>\n<tbody>\n' + "\n".join(rows)
            + "\n</tbody>\n</table>")


def modality_table(entries: list[tuple[str, dict[str, Any]]], modality: str) -> str:
    """The table of one modality: clean, robust at every eps, certified at every radius."""
    have = [(s, e) for s, e in entries if modality in e["modalities"]]
    grid = sorted({c["eps"] for _, e in have for c in e["modalities"][modality]["robust"]})
    radii = sorted({c["radius"] for _, e in have for c in ((e["modalities"][modality]["certified"] or {}).get("curve") or [])})
    head = ('<tr><th class="name">model</th><th>clean</th>' + "".join(f"<th>eps {g:.4g}</th>" for g in grid)
            + "".join(f"<th>certified r={r:g}</th>" for r in radii) + "<th>defended</th></tr>")
    rows = []
    for slug, e in have:
        num = e["modalities"][modality]
        by_eps = {c["eps"]: c["robust"] for c in num["robust"]}
        by_r = {c["radius"]: c["accuracy"] for c in ((num["certified"] or {}).get("curve") or [])}
        rows.append(f'<tr><td class="name"><a href="entries/{esc(slug)}.html">{esc(e["model"]["name"])}</a></td>'
                    + num_cell(num["clean"]) + "".join(num_cell(by_eps.get(g)) for g in grid)
                    + "".join(num_cell(by_r.get(r)) for r in radii)
                    + f'<td class="text">{_defended_text(e, num)}</td></tr>')
    return (f'<table class="sortable" id="table-{esc(modality)}">\n<thead>{head}</thead>\n<tbody>\n' + "\n".join(rows)
            + "\n</tbody>\n</table>")


def _defended_text(entry: dict[str, Any], numbers: dict[str, Any]) -> str:
    if entry["model"]["defense"] is None:
        return "no defense"
    return "yes" if numbers["defended"] else "no (bare tower)"


def index_page(entries: list[tuple[str, dict[str, Any]]], overview: dict[str, str]) -> str:
    """``index.html``: the overall table, one table and one overview figure per modality."""
    mods = _modalities([e for _, e in entries])
    protocols = sorted({_protocol_label(e) for _, e in entries})
    warn = "" if len(protocols) <= 1 else (
        '<p class="note"><strong>These entries follow different protocols</strong> (' + esc("; ".join(protocols))
        + "): their numbers are not comparable.</p>")
    parts = ["<h1>robustmm leaderboard</h1>",
             f'<p class="note">Protocol: {esc(", ".join(protocols))}. Robust accuracy is the per-item worst case of '
             "the protocol's attack ensemble; the headline is the mean over modalities of the robust accuracy at each "
             "modality's headline eps; 'mean over eps grid' averages every budget of every modality. "
             "Numbers are percentages; click a column header to sort.</p>", warn,
             "<h2>Overall</h2>", overall_table(entries, mods)]
    for m in mods:
        parts += [f'<h2 id="{esc(m)}">{esc(m)}</h2>', modality_table(entries, m),
                  f'<p><img src="{esc(overview[m])}" alt="{esc(m)}: robust accuracy of every entry against eps"></p>']
    return page("robustmm leaderboard", "\n".join(parts))


def _card_rows(entry: dict[str, Any]) -> str:
    card, prov = entry["model"], entry["provenance"]
    d = card["defense"]
    rows = [("model", card["model"]), ("parameters", f"{card['parameters']:,}"),
            ("trained by the defense", f"{card['trained_parameters']:,} ({100 * card['trainable_share']:.2f}%)"),
            ("defense", "none" if d is None else f"{d['name']} ({d['kind']}) {json.dumps(d['settings'], sort_keys=True)}"),
            ("weights sha256", card["weights_sha256"]), ("protocol", _protocol_label(entry)),
            ("robustmm", prov["robustmm"]), ("torch", prov["torch"]), ("git commit", prov["git_commit"] or "none"),
            ("machine", json.dumps(prov["machine"], sort_keys=True)), ("date", prov["date"]), ("seed", prov["seed"]),
            ("command", prov["command"]), ("wall time", f"{prov.get('wall_s', 'n/a')} s")]
    return "\n".join(f'<tr><th class="name">{esc(k)}</th><td class="text"><code>{esc(v)}</code></td></tr>' for k, v in rows)


def _cost_text(cost: dict[str, int] | None) -> str:
    return "n/a" if cost is None else f"{cost['forward']:,} fwd / {cost['backward']:,} bwd"


def entry_page(entry: dict[str, Any], images: list[tuple[str, str]]) -> str:
    """``entries/SLUG.html``: model card, per-modality numbers with costs, the figures, provenance."""
    mods = sorted(entry["modalities"], key=modality_order)
    grid = sorted({c["eps"] for m in mods for c in entry["modalities"][m]["robust"]})
    head = ('<tr><th class="name">modality</th><th>n</th><th>clean</th><th>headline</th>'
            + "".join(f"<th>eps {g:.4g}</th>" for g in grid) + '<th class="name">cost (passes)</th><th>defended</th></tr>')
    rows = []
    for m in mods:
        num = entry["modalities"][m]
        by_eps = {c["eps"]: c["robust"] for c in num["robust"]}
        rows.append(f'<tr><td class="name">{esc(m)}</td>' + int_cell(num["n"]) + num_cell(num["clean"])
                    + num_cell(num["headline"]) + "".join(num_cell(by_eps.get(g)) if g in by_eps else '<td class="na">-</td>'
                                                          for g in grid)
                    + f'<td class="text">{esc(_cost_text(num["cost"]))}</td>'
                    + f'<td class="text">{_defended_text(entry, num)}</td></tr>')
    h = entry["headline"]
    robust = "n/a" if h["robust"] is None else f"{100 * h['robust']:.1f}%"
    clean = "n/a" if h["clean"] is None else f"{100 * h['clean']:.1f}%"
    body = ['<p><a href="../index.html">&larr; leaderboard</a></p>', f"<h1>{esc(entry['model']['name'])}</h1>",
            f"<p>Headline robust accuracy: <strong>{esc(robust)}</strong>; clean: "
            f"{esc(clean)}.</p>",
            "<h2>Numbers</h2>", f'<table class="sortable" id="numbers">\n<thead>{head}</thead>\n<tbody>\n'
            + "\n".join(rows) + "\n</tbody>\n</table>"]
    cert = [m for m in mods if entry["modalities"][m]["certified"]]
    if cert:
        radii = sorted({c["radius"] for m in cert for c in entry["modalities"][m]["certified"]["curve"]})
        chead = ('<tr><th class="name">modality</th><th>sigma</th><th>n</th>'
                 + "".join(f"<th>r={r:g}</th>" for r in radii) + "</tr>")
        crows = []
        for m in cert:
            c = entry["modalities"][m]["certified"]
            by_r = {p["radius"]: p["accuracy"] for p in c["curve"]}
            crows.append(f'<tr><td class="name">{esc(m)}</td><td data-value="{c["sigma"]:.6g}">{c["sigma"]:g}</td>'
                         + int_cell(c["n"]) + "".join(num_cell(by_r.get(r)) for r in radii) + "</tr>")
        body += ["<h2>Certified accuracy</h2>", '<p class="note">n/a: the radius is beyond what the draws can certify.</p>',
                 f'<table class="sortable" id="certified">\n<thead>{chead}</thead>\n<tbody>\n' + "\n".join(crows)
                 + "\n</tbody>\n</table>"]
    body += ["<h2>Figures</h2>"] + [f'<p><img src="{esc(src)}" alt="{esc(alt)}"></p>' for src, alt in images]
    body += ["<h2>Model card and provenance</h2>", f"<table>\n{_card_rows(entry)}\n</table>"]
    return page(entry["model"]["name"], "\n".join(body))


def render_site(entries: list[tuple[str | Path, dict[str, Any]]], out_dir: str | Path) -> list[Path]:
    """Write the site for ``entries`` ((source path, entry) pairs, already valid) into ``out_dir``.

    Returns the entry pages written. Entries are listed by headline robust accuracy (highest
    first; entries without one last)."""
    out = Path(out_dir)
    (out / "entries").mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    named = [(entry_slug(p, taken), e) for p, e in entries]
    named.sort(key=lambda se: (se[1]["headline"]["robust"] is None, -(se[1]["headline"]["robust"] or 0.0), se[0]))
    pages = []
    for slug, e in named:
        images = [(f"../img/{slug}-robust.png", f"{e['model']['name']}: robust accuracy against eps per modality")]
        plot_entry_curves(e, out / "img" / f"{slug}-robust.png")
        if plot_certified_curves(e, out / "img" / f"{slug}-certified.png") is not None:
            images.append((f"../img/{slug}-certified.png", f"{e['model']['name']}: certified accuracy against radius"))
        path = out / "entries" / f"{slug}.html"
        atomic_write_text(path, entry_page(e, images))
        pages.append(path)
    overview = {}
    for m in _modalities([e for _, e in named]):
        plot_modality_overview([e for _, e in named], m, out / "img" / f"overview-{m}.png")
        overview[m] = f"img/overview-{m}.png"
    atomic_write_text(out / "index.html", index_page(named, overview))
    log.info("leaderboard: %d entries into %s", len(named), out)
    return pages
