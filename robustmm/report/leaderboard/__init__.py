"""The leaderboard site: benchmark entries (``robustmm.entry/1``) rendered as static HTML.

:func:`render_site` writes ``index.html`` (a sortable table overall and one per modality, the
robustness curves of every entry per modality), ``entries/SLUG.html`` per entry (model card,
numbers, robustness and certified-accuracy curves, provenance) and ``img/*.png``. Pages are
self-contained: inline CSS and one small inline sort script, no fonts, scripts or images from
anywhere else, so the site works from a ``file://`` URL and makes no network request.

Tables that sort are ``<table class="sortable">``: clicking a ``<th>`` sorts the body rows by that
column (again: the other way), numeric cells carry ``data-value`` and cells without a number carry
none and sort last.
"""
from .plots import plot_certified_curves, plot_entry_curves, plot_modality_overview
from .site import entry_slug, render_site

__all__ = ["entry_slug", "plot_certified_curves", "plot_entry_curves", "plot_modality_overview", "render_site"]
