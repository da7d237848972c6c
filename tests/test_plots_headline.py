"""The report's robustness figures: the worst case against PGD alone, the caption-loss retrieval
curves, single-budget attacks and defended models as tables; each says what it shows, and each
stays small enough to read (no figure wider than about 2400 px)."""
from robustmm.records import Result
from robustmm.report.plots.headline import (
    plot_defended,
    plot_retrieval_curves,
    plot_single_budget,
    plot_worst_curves,
    series_name,
)

GRID = [1 / 255, 2 / 255, 4 / 255]
MODEL, DATA = {"name": "tinybind"}, {"name": "synthscenes", "split": "test"}


def rec(attack, top1, *, threat="white-box", defense=None, n=64, modality="image", x2t=None):
    clean = {"zeroshot_top1": 0.95, "x2t_R@1": 0.9}
    attacked = {"zeroshot_top1": top1} | ({} if x2t is None else {"x2t_R@1": x2t})
    return Result(model=MODEL, dataset=DATA, modality=modality, attack=attack, defense=defense, threat=threat,
                  metrics={"clean": clean, "attacked": attacked, "delta": None, "asr": None}, n=n, seed=0, timing_s=0.0)


def job_records():
    parts = {"pgd-10": {"name": "pgd", "steps": 10}, "apgd-ce": {"steps": 20}, "apgd-t": {"steps": 20, "n_target_classes": 3}}
    out = []
    for i, eps in enumerate(GRID):
        out.append(rec({"name": "pgd", "eps": eps, "steps": 10, "nested": True}, 0.8 - 0.2 * i))
        out.append(rec({"name": "worst-case", "eps": eps, "parts": parts}, 0.5 - 0.2 * i, threat="worst-case"))
        out.append(rec({"name": "pgd", "eps": eps, "steps": 10, "loss": "caption", "nested": False}, 0.7, x2t=0.6 - 0.2 * i))
    out.append(rec({"name": "ensemble", "eps": 4 / 255, "steps": 10}, 0.0, n=32))
    out.append(rec({"name": "pgd", "eps": 4 / 255, "steps": 10}, 0.6, threat="adaptive",
                   defense={"name": "calibration", "objective": "ce"}))
    return out


def svg_text(paths):
    return next(p for p in paths if p.suffix == ".svg").read_text()


def test_plot_worst_curves_names_model_data_items_attacks_and_scale(tmp_path):
    svg = svg_text(plot_worst_curves(job_records(), tmp_path))
    for text in ("tinybind on synthscenes/test", "n = 64", "APGD-CE-20", "APGD-T-20 (3 targets)", "PGD-10 alone",
                 "the weaker attack", "log2 axis", "per-item worst case", "4/255"):
        assert text in svg, text


def test_plot_retrieval_curves_draw_the_caption_loss_curve(tmp_path):
    svg = svg_text(plot_retrieval_curves(job_records(), tmp_path))
    assert "caption loss, every item at every ε" in svg and "image→text R@1" in svg


def test_single_budget_and_defended_figures_tabulate_under_the_worst_case(tmp_path):
    one = svg_text(plot_single_budget(job_records(), tmp_path))
    assert "ensemble" in one and "n = 32" in one and "bare model: per-item worst case at the column's ε" in one
    assert "n = 64" in one and "attacked zero-shot top-1" in one
    defended = svg_text(plot_defended(job_records(), tmp_path))
    assert "calibration:ce / PGD-10 (adaptive)" in defended


def test_series_name_says_attack_and_steps():
    r = rec({"name": "apgd", "eps": 0.01, "steps": 5, "loss": "dlr-targeted", "n_target_classes": 2}, 0.1)
    assert series_name(r) == "APGD-T-5 (2 targets)"
    assert plot_worst_curves([], ".") == []


def png_size(paths):
    from PIL import Image

    with Image.open(next(p for p in paths if p.suffix == ".png")) as im:
        return im.size


MODS = ("image", "video", "audio", "depth", "thermal", "pointcloud")


def many_series_records():
    """Ten defended series of PGD on six modalities: what made the bar chart 7600 px wide."""
    out = []
    for m in MODS:
        out.append(rec({"name": "pgd", "eps": 4 / 255, "steps": 5}, 0.1, modality=m))
        for k in range(9):
            out.append(rec({"name": "pgd", "eps": 4 / 255, "steps": 5}, 0.05 * k, modality=m, threat="adaptive",
                           defense={"name": f"defense{k}", "objective": "ce"}))
    return out


def test_attack_bars_with_many_series_wrap_into_readable_panels(tmp_path):
    from robustmm.report.plots.bars import plot_attack_bars

    paths = plot_attack_bars(many_series_records(), tmp_path)
    width, height = png_size(paths)
    assert width <= 2400 and height <= 2400, (width, height)
    svg = svg_text(paths)
    assert "tinybind on synthscenes/test" in svg or ("tinybind" in svg and "synthscenes/test" in svg)
    assert all(f"{m}, ε = " in svg for m in MODS)


def test_defended_table_stays_compact_with_many_series(tmp_path):
    rs = many_series_records() + [rec({"name": "worst-case", "eps": 4 / 255, "parts": {}}, 0.0, threat="worst-case",
                                      modality=m) for m in MODS]
    paths = plot_defended(rs, tmp_path)
    width, height = png_size(paths)
    assert width <= 2400 and height <= 2400, (width, height)
    svg = svg_text(paths)
    assert "defense3:ce / PGD-5 (adaptive)" in svg and "bare model: per-item worst case" in svg
