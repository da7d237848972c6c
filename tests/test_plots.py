"""Plots: every figure function writes a valid PNG + SVG, and bad or empty input never crashes."""
import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from robustmm.modalities import MODALITIES
from robustmm.records import Result
from robustmm.report.plots import (
    amplified_perturbation,
    plot_attack_bars,
    plot_calibration,
    plot_gallery,
    plot_pointcloud,
    plot_robustness_curves,
    plot_spectrograms,
    write_all_plots,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MODEL = {"name": "tinybind", "weights": "tinybind.safetensors", "preprocess": {}}
DATA = {"name": "synthscenes", "split": "test", "size": 200, "seed": 0}


def _metrics(modality: str, clean: float, attacked: float | None, asr: float | None = None) -> dict:
    """Plausible metrics; point clouds get retrieval only (no zero-shot task) to test the fallback."""
    def block(acc: float) -> dict:
        d = {"t2x_R@1": acc * 0.6, "x2t_R@1": acc * 0.7, "t2x_MRR": acc * 0.8}
        if modality != "pointcloud":
            d |= {"zeroshot_top1": acc, "zeroshot_top5": min(1.0, acc + 0.2)}
        return d

    m = {"clean": block(clean), "attacked": None, "delta": None, "asr": None}
    if attacked is not None:
        m["attacked"] = block(attacked)
        m["delta"] = {k: m["attacked"][k] - v for k, v in m["clean"].items()}
        m["asr"] = asr if asr is not None else max(0.0, 1 - attacked / clean)
    return m


def make_result(modality: str, *, attack: dict | None = None, defense: dict | None = None,
                threat: str = "clean", clean: float = 0.8, attacked: float | None = None,
                model: dict | None = None) -> Result:
    return Result(model=model or dict(MODEL), dataset=dict(DATA), modality=modality, attack=attack,
                  defense=defense, threat=threat, metrics=_metrics(modality, clean, attacked), n=200,
                  seed=0, timing_s=1.0, versions={"robustmm": "test", "torch": "test"})


def pgd(eps: float) -> dict:
    return {"name": "pgd", "eps": eps, "norm": "linf", "steps": 10}


def fake_results() -> list[Result]:
    """Clean + PGD curves on three modalities, a transfer curve, a calibration pair, a patch."""
    out: list[Result] = []
    clean_acc = {"image": 0.82, "audio": 0.64, "pointcloud": 0.71}
    for m, c in clean_acc.items():
        out.append(make_result(m, clean=c))
        for i, eps in enumerate(MODALITIES[m].eps_grid):
            out.append(make_result(m, attack=pgd(eps), threat="white-box", clean=c, attacked=c * 0.55 ** (i + 1)))
    src = {"name": "tinybind-random", "weights": None}
    for i, eps in enumerate(MODALITIES["image"].eps_grid):
        out.append(make_result("image", attack=pgd(eps), threat="transfer", clean=0.82,
                               attacked=0.82 * 0.9 ** (i + 1), model={**MODEL, "source": src}))
    cal = {"name": "calibration", "objective": "ce", "epochs": 3}
    for m in ("image", "audio"):
        eps = MODALITIES[m].middle_eps
        out.append(make_result(m, attack=pgd(eps), defense=cal, threat="head-unaware", clean=clean_acc[m] - 0.05,
                               attacked=clean_acc[m] * 0.6))
        out.append(make_result(m, attack=pgd(eps), defense=cal, threat="adaptive", clean=clean_acc[m] - 0.05,
                               attacked=clean_acc[m] * 0.2))
    out.append(make_result("image", attack={"name": "patch", "eps": None, "area": 0.05}, threat="white-box",
                           clean=0.82, attacked=0.3))
    return out


def assert_png_svg(paths: list[Path], n_figures: int | None = None) -> None:
    assert paths, "nothing written"
    pngs = [p for p in paths if p.suffix == ".png"]
    svgs = [p for p in paths if p.suffix == ".svg"]
    assert len(pngs) == len(svgs) and len(pngs) + len(svgs) == len(paths)
    if n_figures is not None:
        assert len(pngs) == n_figures
    for p in pngs:
        assert p.exists() and p.stat().st_size > 1000
        assert p.read_bytes()[:8] == PNG_MAGIC
        assert p.with_suffix(".svg") in svgs
    for p in svgs:
        root = ET.parse(p).getroot()  # well-formed XML
        assert root.tag.endswith("svg")
    # no temp files left behind
    for folder in {p.parent for p in paths}:
        assert not list(folder.glob(".*.tmp"))


@pytest.fixture(scope="module")
def all_plots(tmp_path_factory) -> list[Path]:
    """write_all_plots on the fake results, rendered once for the tests that only inspect files."""
    out = tmp_path_factory.mktemp("plots") / "new" / "plots"
    written = write_all_plots(fake_results(), out)
    return written + plot_robustness_curves(fake_results(), out)  # every curve on one figure (not a job figure)


def small_results() -> list[Result]:
    """A cheaper subset (image only) for tests about input handling."""
    return [r for r in fake_results() if r.modality == "image"]


def tiny_results() -> list[Result]:
    """The least that exercises every chart: clean, two PGD budgets, one calibrated result."""
    cal = {"name": "calibration", "objective": "ce"}
    return [make_result("image"),
            make_result("image", attack=pgd(2 / 255), threat="white-box", attacked=0.5),
            make_result("image", attack=pgd(4 / 255), threat="white-box", attacked=0.3),
            make_result("image", attack=pgd(4 / 255), defense=cal, threat="head-unaware", attacked=0.6)]


def test_write_all_plots(all_plots):
    assert_png_svg(all_plots, 7)  # 2 point figures + 2 attack bars + calibration, and the 2 all-curve figures
    assert {p.stem for p in all_plots} == {"robustness_one_eps", "robustness_defended", "attack_pgd", "attack_patch",
                                           "calibration", "robustness_top1", "robustness_r1"}
    assert all(p.parent.name == "plots" and p.parent.parent.name == "new" for p in all_plots)


def test_robustness_curves_labels(all_plots):
    """Ticks in the modality's unit, a clean point, readable series names (SVG keeps text as comments)."""
    paths = all_plots
    svg = next(p for p in paths if p.name == "robustness_top1.svg").read_text()
    for text in ("4/255", "0.004", "clean", "tinybind + calibration:ce (head-unaware)",
                 "tinybind (transfer from tinybind-random)", "image — PGD, L∞"):
        assert text in svg, text
    r1 = next(p for p in paths if p.name == "robustness_r1.svg").read_text()
    assert "text→pointcloud R@1" in r1


def test_attack_bars_and_calibration(all_plots):
    svg = {p.stem: p.read_text() for p in all_plots if p.suffix == ".svg"}
    assert "ASR" in svg["attack_pgd"] or "attack success rate" in svg["attack_pgd"]
    assert "ε = 4/255" in svg["attack_pgd"]
    for text in ("clean, with head", "attacked, with head: adaptive", "“ce”"):
        assert text in svg["calibration"], text


def test_plotted_values_are_the_records_values():
    """The curve of a series passes through its records' numbers (clean point first, then each
    budget in order), and the bars stand at the clean and attacked scores at the middle budget."""
    from robustmm.report.plots.bars import _bars_figure
    from robustmm.report.plots.curves import _curve_figure, _is_curve
    from robustmm.report.plots.record_values import colour_map

    rs = fake_results()
    grid = MODALITIES["image"].eps_grid
    white_box = [0.82 * 0.55 ** (i + 1) for i in range(len(grid))]
    fig = _curve_figure([r for r in rs if _is_curve(r)], [r for r in rs if r.threat == "clean"], ("zeroshot_top1",),
                        "top-1", colour_map(rs))
    ax = next(a for a in fig.axes if a.get_title().startswith("image — PGD, L∞\n(n = "))
    lines = [(list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.lines]
    assert (list(range(len(grid) + 1)), pytest.approx([0.82, *white_box])) in lines
    transfer = [0.82 * 0.9 ** (i + 1) for i in range(len(grid))]
    assert (list(range(len(grid) + 1)), pytest.approx([0.82, *transfer])) in lines

    pgd_records = [r for r in rs if r.attack and r.attack.get("name") == "pgd"]
    bars = _bars_figure("pgd", pgd_records, colour_map(rs)).axes[0]
    heights = [p.get_height() for p in bars.patches]
    mid = grid.index(MODALITIES["image"].middle_eps)
    for v in (0.82, white_box[mid], transfer[mid], 0.82 * 0.6, 0.82 * 0.2):  # clean, white-box, transfer, heads
        assert v == pytest.approx(min(heights, key=lambda h: abs(h - v))), v


def test_attack_bars_direct(tmp_path):
    paths = plot_attack_bars(small_results(), tmp_path)
    assert_png_svg(paths, 2)
    assert {p.stem for p in paths} == {"attack_pgd", "attack_patch"}


def test_calibration_several_objectives(tmp_path):
    rs = small_results()
    for obj in ("l2", "infonce"):
        d = {"name": "calibration", "objective": obj}
        rs.append(make_result("image", attack=pgd(4 / 255), defense=d, threat="head-unaware", attacked=0.5))
    paths = plot_calibration(rs, tmp_path)
    assert_png_svg(paths, 1)
    assert all(f"“{o}”" in paths[1].read_text() for o in ("ce", "l2", "infonce"))


@pytest.mark.parametrize("fn", [plot_robustness_curves, plot_attack_bars, plot_calibration, write_all_plots])
def test_empty_input_returns_nothing(tmp_path, caplog, fn):
    with caplog.at_level(logging.INFO, logger="robustmm.report.plots"):
        assert fn([], tmp_path) == []
    assert caplog.records
    assert not list(tmp_path.glob("*.png"))


def test_only_clean_results_gives_no_curves(tmp_path):
    rs = [make_result("image"), make_result("audio")]
    assert plot_robustness_curves(rs, tmp_path) == []
    assert plot_attack_bars(rs, tmp_path) == []
    assert plot_calibration(rs, tmp_path) == []


def test_malformed_results_are_skipped(tmp_path, caplog):
    rs = tiny_results()
    broken = make_result("image", attack=pgd(8 / 255), threat="white-box", attacked=0.1)
    broken.metrics = {}  # missing metrics entirely
    no_attacked = make_result("image", attack=pgd(1 / 255), threat="white-box", attacked=0.1)
    no_attacked.metrics["attacked"] = None
    weird = make_result("image", attack=pgd(2 / 255), threat="white-box", attacked=0.1)
    weird.metrics["attacked"] = {"zeroshot_top1": "nan?"}
    rs += [broken, no_attacked, weird, {"schema": "something-else"}, 42]
    with caplog.at_level(logging.WARNING, logger="robustmm.report.plots"):
        paths = write_all_plots(rs, tmp_path)
    assert_png_svg(paths, 4)  # 2 curves + pgd bars + calibration
    assert sum("malformed" in r.getMessage() for r in caplog.records) == 3  # broken, foreign schema, 42
    assert any("malformed" in r.getMessage() for r in caplog.records)


def test_missing_retrieval_metrics_skip_that_figure(tmp_path):
    rs = [make_result("image"), make_result("image", attack=pgd(4 / 255), threat="white-box", attacked=0.4)]
    for r in rs:
        for part in ("clean", "attacked"):
            if r.metrics[part]:
                r.metrics[part] = {"zeroshot_top1": r.metrics[part]["zeroshot_top1"]}
    paths = plot_robustness_curves(rs, tmp_path)
    assert {p.name for p in paths} == {"robustness_top1.png", "robustness_top1.svg"}


def test_results_as_dicts(tmp_path):
    paths = plot_robustness_curves([r.to_dict() for r in tiny_results()], tmp_path)
    assert_png_svg(paths, 2)


def test_gallery(tmp_path):
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(2):
        clean = torch.rand(3, 64, 64, generator=g)
        adv = (clean + 0.03 * torch.randn(3, 64, 64, generator=g)).clamp(0, 1)
        rows.append([
            {"title": f"item {i}", "image": clean, "caption": "pred: red circle ✓"},
            {"title": f"item {i}", "image": adv, "caption": "pred: blue square ✗"},
            {"title": "depth", "image": torch.rand(1, 64, 64, generator=g), "caption": "grey"},
            {"title": "perturbation ×", "image": amplified_perturbation(clean, adv), "caption": ""},
        ])
    rows[1][2] = None  # an empty slot
    paths = plot_gallery(rows, ["clean", "adversarial", "depth", "perturbation"], tmp_path / "gallery.png")
    assert_png_svg(paths, 1)
    assert {p.name for p in paths} == {"gallery.png", "gallery.svg"}
    assert plot_gallery([], ["clean"], tmp_path / "empty.png") == []


def test_amplified_perturbation_range():
    clean = torch.zeros(3, 4, 4)
    adv = clean.clone()
    adv[0, 0, 0] = 0.01
    amp = amplified_perturbation(clean, adv)
    assert amp.min() >= 0 and amp.max() <= 1
    assert amp[0, 0, 0] == pytest.approx(1.0) and amp[1, 1, 1] == pytest.approx(0.5)


def test_spectrograms(tmp_path):
    sr = 8000
    t = torch.arange(sr // 2) / sr
    clean = 0.5 * torch.sin(2 * torch.pi * 440 * t)
    adv = (clean + 0.004 * torch.sign(torch.randn(t.shape, generator=torch.Generator().manual_seed(0)))).clamp(-1, 1)
    assert_png_svg(plot_spectrograms(clean, adv, sr, tmp_path / "spec"), 1)
    assert plot_spectrograms(torch.zeros(0), torch.zeros(0), sr, tmp_path / "none") == []


def test_pointcloud(tmp_path):
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(512, 6, generator=g) * 2 - 1
    adv = (clean + 0.04 * torch.sign(torch.randn(512, 6, generator=g))).clamp(-1, 1)
    assert_png_svg(plot_pointcloud(clean, adv, tmp_path / "pc.svg"), 1)
    assert (tmp_path / "pc.png").exists()
    with pytest.raises(ValueError):
        plot_pointcloud(clean, adv[:10], tmp_path / "bad")


def test_attack_variants_are_not_averaged(tmp_path):
    """Two PGD settings at the same budget become two labelled lines, not one averaged line."""
    rs = [make_result("image")]
    for steps, acc in ((10, 0.5), (100, 0.2)):
        for eps in (2 / 255, 4 / 255):
            rs.append(make_result("image", attack={**pgd(eps), "steps": steps, "step_size": eps / 4},
                                  threat="white-box", attacked=acc))
    paths = plot_robustness_curves(rs, tmp_path)
    svg = next(p for p in paths if p.name == "robustness_top1.svg").read_text()
    assert "tinybind [steps=10]" in svg and "tinybind [steps=100]" in svg
