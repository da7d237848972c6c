"""`robustmm leaderboard ENTRIES... --out site/`: validate benchmark entries, then render the static site."""
from __future__ import annotations

from pathlib import Path

from ..errors import EntryError
from ..outdir import check_writable_dir
from ..report.leaderboard import render_site
from .bench_entry import validate_file


def entry_files(paths: list[str]) -> list[Path]:
    """The entry files named by ``paths``: files as given, folders as their ``*.json`` (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.glob("*.json") if q.is_file())
        elif p.is_file():
            out.append(p)
        else:
            raise EntryError(f"{p}: no such entry file or folder")
    if not out:
        raise EntryError(f"no entry files in {', '.join(paths)}: run `robustmm bench MODEL --out FILE.json` first")
    return out


def leaderboard_command(paths: list[str], out_dir: str) -> list[Path]:
    """Validate every entry (the first bad one is a one-line EntryError), then write the site; returns its entry pages."""
    files = entry_files(paths)
    entries = [(f, validate_file(f)) for f in files]
    return render_site(entries, check_writable_dir(out_dir, "site folder"))
