"""The defense zoo's table and figure, from its ``summary.json`` (:mod:`robustmm.job.zoo`).

:func:`zoo_markdown`: one row per (modality, defense) with clean top-1, the naive (transferred)
and the adaptive worst-case top-1 at the smallest and the middle eps, the parameters the defense
trained, training and inference time, attack passes where records carry them, certified top-1 at
the reference radii for smoothing entries, and the flags (``naive overstates``, masked gradients,
failed checks). :func:`plot_zoo`: one panel per modality, bars per defense of clean, naive and
adaptive worst case at the middle eps. Both read the summary only; nothing is attacked here.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .plots.style import modality_order, new_figure

__all__ = ["plot_zoo", "zoo_markdown", "zoo_rows"]


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * float(v):.1f}"


def _params(p: Mapping[str, Any] | None) -> str:
    if not p:
        return "–"
    n = int(p.get("trained", 0))
    return "0" if n == 0 else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _cost(c: Mapping[str, Any] | None) -> tuple[str, str, str]:
    if not c:
        return "–", "–", "not recorded"
    train = c.get("train_s")
    infer, bare = c.get("infer_ms_per_item"), c.get("bare_infer_ms_per_item")
    ratio = f" (×{infer / bare:.1f})" if isinstance(infer, (int, float)) and isinstance(bare, (int, float)) and bare > 0 else ""
    passes = c.get("attack_passes")
    if not isinstance(passes, str):  # per item, summed over the audit's attack records
        passes = (f"{passes['forward']:,}+{passes['backward']:,}" if isinstance(passes, Mapping) and "forward" in passes
                  and "backward" in passes else "not recorded")
    return ("–" if train is None else f"{train:.1f}"), ("–" if infer is None else f"{infer:.2f}{ratio}"), passes


def _certified(c: Mapping[str, Any] | None) -> str:
    if not c:
        return ""
    vals = ", ".join(f"r={float(k):g}: " + ("unreachable" if v is None else _pct(v)) for k, v in (c.get("top1") or {}).items())
    return f"σ={c.get('sigma'):g}: {vals}"


def zoo_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The summary's rows sorted by modality (registry order), then defense."""
    return sorted(summary.get("rows", []), key=lambda r: (modality_order(r["modality"]), r["defense"]))


HEADER = ["modality", "defense", "clean", "naive (small ε)", "adaptive WC (small ε)", "naive (mid ε)",
          "adaptive WC (mid ε)", "trained params", "train s", "infer ms/item", "attack passes/item (fwd+bwd)",
          "certified top-1",
          "flags"]


def zoo_markdown(summary: Mapping[str, Any]) -> str:
    """The zoo table as a Markdown page: settings, the naive-overstates rule, one row per pair."""
    s = summary.get("settings", {})
    lines = [f"# Defense zoo: {s.get('model', '?')} on {s.get('data', '?')}", "",
             f"n = {s.get('n')} test items per pair (training {s.get('n_train')}, selection {s.get('n_val')}), "
             f"attacks {s.get('steps')} steps, EOT {s.get('eot_samples')} draws, seed {s.get('seed')}"
             + (", --quick" if s.get("quick") else "") + ". Top-1 in %.", "",
             "*naive*: per-item worst case of PGD, APGD-CE and APGD-T made on the undefended model and transferred. "
             "*adaptive WC*: per-item worst case over those naive examples and "
             "white-box PGD, APGD-CE and APGD-T on the defended model (BPDA for declared non-differentiable "
             "steps, EOT for randomized ones). **naive overstates**: naive − adaptive > 2·sqrt((p_n(1−p_n) + "
             "p_a(1−p_a))/n) at that eps. Train s: building the defense (training and selection); infer: clean pass "
             "(× the bare model's); \"–\" where nothing applies.", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in zoo_rows(summary):
        if r.get("status") != "ok":
            status = r.get("status", "n/a")
            lines.append(f"| {r['modality']} | {r['defense']} | {status}: {r.get('reason', '')} |" + " |" * (len(HEADER) - 3))
            continue
        small, mid = (r.get("eps") or {}).get("smallest", {}), (r.get("eps") or {}).get("middle", {})
        train, infer, passes = _cost(r.get("cost"))
        flags = "; ".join(r.get("flagged") or []) or "–"
        cells = [r["modality"], r["defense"], _pct(r.get("clean")),
                 f"{_pct(small.get('naive'))} @{small.get('eps_label', '?')}", _pct(small.get("worst")),
                 f"{_pct(mid.get('naive'))} @{mid.get('eps_label', '?')}", _pct(mid.get("worst")),
                 _params(r.get("params")), train, infer, passes, _certified(r.get("certified")) or "–", flags]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    wall = summary.get("wall_s")
    lines += ["", f"Wall time of the audits: {wall:.0f} s." if isinstance(wall, (int, float)) else "",
              f"Command: `{summary.get('command', 'not recorded')}`; commit {summary.get('commit', 'not recorded')}; "
              f"machine: {summary.get('machine', 'not recorded')}.", ""]
    return "\n".join(lines)


def plot_zoo(summary: Mapping[str, Any]) -> Any:
    """One figure: a panel per modality, per defense three bars (clean, naive, adaptive worst case at
    the middle eps); defenses flagged "naive overstates" get a star. Returns the Figure."""
    rows = [r for r in zoo_rows(summary) if r.get("status") == "ok"]
    mods = sorted({r["modality"] for r in rows}, key=modality_order)
    cols = min(3, max(1, len(mods)))
    nrows = (len(mods) + cols - 1) // cols
    width = max(len([r for r in rows if r["modality"] == m]) for m in mods) if mods else 1
    fig = new_figure(max(10.0, cols * (1.0 + 0.55 * width)), 3.6 * max(nrows, 1))
    axes = fig.subplots(max(nrows, 1), cols, squeeze=False)
    kinds = [("clean", "#9e9e9e"), ("naive", "#64b5f6"), ("adaptive worst case", "#d32f2f")]
    for ax, m in zip(axes.flat, mods):
        mine = [r for r in rows if r["modality"] == m]
        mid = mine[0]["eps"]["middle"].get("eps_label", "?") if mine else "?"
        for i, r in enumerate(mine):
            vals = [r.get("clean"), r["eps"]["middle"].get("naive"), r["eps"]["middle"].get("worst")]
            for j, ((label, colour), v) in enumerate(zip(kinds, vals)):
                ax.bar(i + (j - 1) * 0.27, 0.0 if v is None else v, 0.27, color=colour, label=label if i == 0 else None)
            if vals[2] is not None:  # the headline number, written out (a zero bar is otherwise invisible)
                ax.text(i + 0.27, vals[2] + 0.01, f"{vals[2]:.2f}", ha="center", va="bottom", fontsize=6)
            if r["eps"]["middle"].get("naive_overstates"):
                ax.text(i, 1.02, "*", ha="center", va="bottom", fontsize=12, color="#d32f2f")
        ax.set_xticks(range(len(mine)), [r["defense"] for r in mine], rotation=35, ha="right", fontsize=8)
        ax.set_ylim(0, 1.12)
        ax.set_title(f"{m} (middle ε = {mid})", fontsize=10)
        ax.set_ylabel("zero-shot top-1", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(mods):]:
        ax.set_visible(False)
    if mods:
        fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=8)
    s = summary.get("settings", {})
    fig.suptitle(f"Defense zoo: {s.get('model', '?')} on {s.get('data', '?')}, n = {s.get('n')}; "
                 "* = naive overstates (> 2 SE above the adaptive worst case)", fontsize=10)
    return fig
