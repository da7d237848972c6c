"""Figures of single examples: image galleries, audio spectrograms, point clouds."""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .style import figure_stem, new_figure, save_figure, wrap_text

log = logging.getLogger(__name__)


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def amplified_perturbation(clean: Any, adversarial: Any, gain: float | None = None) -> np.ndarray:
    """``0.5 + gain * (adversarial - clean)`` clipped to [0, 1], for showing a perturbation.

    ``gain`` defaults to the factor that maps the largest |delta| to 0.5 (full contrast); grey is
    "unchanged". Works on any (C, H, W) pair; returns a numpy array.
    """
    delta = _to_numpy(adversarial) - _to_numpy(clean)
    if gain is None:
        peak = float(np.abs(delta).max()) if delta.size else 0.0
        gain = 0.5 / peak if peak > 0 else 1.0
    return np.clip(0.5 + gain * delta, 0.0, 1.0)


def _image_array(img: Any) -> tuple[np.ndarray, str | None]:
    """(H, W, 3) or (H, W) array in [0, 1], upscaled (nearest neighbour) to >= 192 px."""
    a = _to_numpy(img)
    if a.ndim == 4:  # video (T, C, H, W): the middle frame
        a = a[a.shape[0] // 2]
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)
    elif a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] in (1, 3) and a.shape[0] != a.shape[-1]:
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]
    if a.ndim not in (2, 3):
        raise ValueError(f"cannot show an array of shape {a.shape} as an image")
    a = np.clip(a, 0.0, 1.0)
    k = max(1, math.ceil(192 / max(a.shape[0], a.shape[1])))
    if k > 1:
        a = a.repeat(k, axis=0).repeat(k, axis=1)
    return a, ("gray" if a.ndim == 2 else None)


def plot_gallery(rows: Sequence[Sequence[dict[str, Any] | None]], columns: Sequence[str],
                 out_path: str | Path) -> list[Path]:
    """A grid of examples: one row per item, one column per variant (e.g. clean / adversarial / patched).

    Each cell is ``{"image": Tensor (3,H,W) | (1,H,W) | (H,W) in [0, 1], "title": str,
    "caption": str}`` or ``None`` (left empty). The first cell's title labels the row; a cell
    title that differs from it is shown above its caption. Captions with ✓ are drawn green, with ✗
    red. Small images are upscaled nearest-neighbour, so pixels stay sharp in PNG and SVG. Show a
    perturbation by passing e.g. :func:`amplified_perturbation` as a cell image.
    """
    rows = [list(r) for r in (rows or []) if r]
    if not rows:
        log.info("plot_gallery: no examples; nothing to plot")
        return []
    ncols = max(len(columns), max(len(r) for r in rows))
    cols = [*columns, *([""] * (ncols - len(columns)))]
    fig = new_figure(2.3 * ncols + 0.6, 2.75 * len(rows) + 0.3)
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for i, row in enumerate(rows):
        row_title = str((row[0] or {}).get("title", "")) if row else ""
        for j in range(ncols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            cell = row[j] if j < len(row) else None
            if i == 0 and cols[j]:
                ax.set_title(cols[j], fontsize=11, fontweight="bold")
            if j == 0 and row_title:
                ax.set_ylabel(wrap_text(row_title, 24), fontsize=9)
            if not cell or cell.get("image") is None:
                for s in ax.spines.values():
                    s.set_visible(False)
                continue
            try:
                arr, cmap = _image_array(cell["image"])
            except Exception as e:  # noqa: BLE001
                log.warning("plot_gallery: cell (%d, %d) not drawable: %s", i, j, e)
                ax.text(0.5, 0.5, "not an image", ha="center", va="center", transform=ax.transAxes, fontsize=8)
                continue
            ax.imshow(arr, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            caption = str(cell.get("caption", "") or "")
            title = str(cell.get("title", "") or "")
            text = "\n".join(t for t in (title if title != row_title else "", wrap_text(caption, 30)) if t)
            colour = "#1a7f37" if "✓" in caption else "#c0392b" if "✗" in caption else "black"
            ax.set_xlabel(text, fontsize=8.5, color=colour)
    return save_figure(fig, figure_stem(out_path))


def _stft_db(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Magnitude in dB relative to a full-scale sine (|S| normalised by sum(window)/2)."""
    import torch

    w = torch.hann_window(n_fft)
    s = torch.stft(torch.from_numpy(x).float(), n_fft, hop_length=hop, window=w, center=True,
                   pad_mode="constant", return_complex=True).abs()
    s = s / (w.sum() / 2)
    return (20 * torch.log10(s + 1e-10)).numpy()


def plot_spectrograms(clean: Any, adversarial: Any, sample_rate: int, out_path: str | Path,
                      titles: tuple[str, str] = ("clean", "adversarial")) -> list[Path]:
    """Log-magnitude spectrograms of a clean and an adversarial waveform and of their difference.

    Three panels side by side on one colour scale (dB, 0 dB = a full-scale sine), time in seconds
    and frequency in Hz; the perturbation panel states its SNR and L-inf size. Waveforms are (L,)
    tensors or arrays (a leading singleton dimension is dropped).
    """
    c = _to_numpy(clean).reshape(-1)
    a = _to_numpy(adversarial).reshape(-1)
    if c.size == 0 or a.size == 0:
        log.info("plot_spectrograms: empty waveform; nothing to plot")
        return []
    if c.shape != a.shape:
        raise ValueError(f"clean and adversarial waveforms differ in length: {c.shape} vs {a.shape}")
    n_fft = 2 ** max(3, round(math.log2(max(sample_rate * 0.032, 8))))
    while n_fft > c.size and n_fft > 8:
        n_fft //= 2
    hop = max(1, n_fft // 4)
    d = a - c
    specs = [_stft_db(c, n_fft, hop), _stft_db(a, n_fft, hop), _stft_db(d, n_fft, hop)]
    vmax = float(max(s.max() for s in specs[:2]))
    vmin = vmax - 90.0
    dur = c.size / sample_rate
    p_sig, p_noise = float(np.mean(c ** 2)), float(np.mean(d ** 2))
    snr = "∞" if p_noise == 0 else f"{10 * math.log10(max(p_sig, 1e-20) / p_noise):.1f}"
    names = [titles[0], titles[1],
             f"perturbation ({titles[1]} − {titles[0]})\nSNR {snr} dB, L∞ = {np.abs(d).max():.3g}"]
    fig = new_figure(13.5, 4.0)
    axes = fig.subplots(1, 3, sharey=True)
    im = None
    for ax, s, name in zip(axes, specs, names):
        im = ax.imshow(s, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax,
                       extent=(0.0, dur, 0.0, sample_rate / 2), interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("time (s)")
    axes[0].set_ylabel("frequency (Hz)")
    cb = fig.colorbar(im, ax=list(axes), shrink=0.9, pad=0.01)
    cb.set_label("level (dB, 0 dB = full-scale sine)")
    fig.suptitle(f"Log-magnitude spectrograms ({sample_rate} Hz, {n_fft}-point STFT, shared colour scale)", fontsize=11)
    return save_figure(fig, figure_stem(out_path))


def plot_pointcloud(clean: Any, adversarial: Any, out_path: str | Path, max_points: int = 4096) -> list[Path]:
    """Clean vs adversarial point cloud, plus where and how far the points moved.

    ``clean`` / ``adversarial``: (P, 6) tensors, xyz then rgb, every channel in [-1, 1]. Panels
    1-2 show the points in their own colours (rgb mapped to [0, 1]); panel 3 colours each clean
    point by its xyz displacement and draws arrows (scaled up, factor in the title) for the 40
    most displaced points. All panels share axes limits and view angle.
    """
    c = _to_numpy(clean)
    a = _to_numpy(adversarial)
    if c.size == 0 or a.size == 0:
        log.info("plot_pointcloud: empty point cloud; nothing to plot")
        return []
    if c.ndim != 2 or c.shape != a.shape or c.shape[1] < 3:
        raise ValueError(f"expected two (P, 6) point clouds of the same shape, got {c.shape} and {a.shape}")
    if c.shape[0] > max_points:
        idx = np.random.default_rng(0).choice(c.shape[0], max_points, replace=False)
        c, a = c[idx], a[idx]
    disp = a[:, :3] - c[:, :3]
    mag = np.linalg.norm(disp, axis=1)
    has_rgb = c.shape[1] >= 6
    rgb = lambda p: np.clip((p[:, 3:6] + 1) / 2, 0, 1) if has_rgb else "tab:blue"  # noqa: E731
    lo = np.minimum(c[:, :3].min(0), a[:, :3].min(0))
    hi = np.maximum(c[:, :3].max(0), a[:, :3].max(0))
    extent = float(max((hi - lo).max(), 1e-6))
    fig = new_figure(15.0, 5.0)
    size = float(np.clip(6000 / c.shape[0], 2, 14))
    kw = dict(s=size, depthshade=False, linewidths=0, rasterized=True)
    axes = [fig.add_subplot(1, 3, i + 1, projection="3d") for i in range(3)]
    axes[0].scatter(c[:, 0], c[:, 1], c[:, 2], c=rgb(c), **kw)
    axes[0].set_title("clean", fontsize=10)
    axes[1].scatter(a[:, 0], a[:, 1], a[:, 2], c=rgb(a), **kw)
    colour_shift = float(np.abs(a[:, 3:6] - c[:, 3:6]).max()) if has_rgb else 0.0
    axes[1].set_title(f"adversarial\nmax |Δxyz|∞ = {np.abs(disp).max():.3g}, max |Δrgb|∞ = {colour_shift:.3g}",
                      fontsize=10)
    sc = axes[2].scatter(c[:, 0], c[:, 1], c[:, 2], c=mag, cmap="viridis", **kw)
    top = np.argsort(mag)[-40:]
    top = top[mag[top] > 0]
    gain = 0.15 * extent / float(mag.max()) if mag.max() > 0 else 1.0
    if mag.max() > 0:
        axes[2].quiver(c[top, 0], c[top, 1], c[top, 2], *(gain * disp[top].T), color="crimson",
                       linewidth=0.8, arrow_length_ratio=0.3)
    axes[2].set_title(f"displacement |Δxyz|₂ per point (mean {mag.mean():.3g})\n"
                      f"red arrows: 40 largest, drawn ×{gain:.0f}", fontsize=10)
    cb = fig.colorbar(sc, ax=axes[2], shrink=0.6, pad=0.02)
    cb.set_label("|Δxyz|₂ (coordinate units)", fontsize=8)
    cb.ax.tick_params(labelsize=8)
    for ax in axes:
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_zlim(lo[2], hi[2])
        ax.set_box_aspect(tuple(np.maximum(hi - lo, 0.05 * extent)), zoom=0.95)
        ax.view_init(elev=20, azim=-60)
        for axis, _name in zip((ax.xaxis, ax.yaxis, ax.zaxis), "xyz"):
            axis.set_major_locator(_max_n_locator(3))
            axis.set_tick_params(labelsize=7, pad=0)
        ax.set_xlabel("x", fontsize=8, labelpad=0)
        ax.set_ylabel("y", fontsize=8, labelpad=0)
        ax.set_zlabel("z", fontsize=8, labelpad=0)
    fig.suptitle("Point cloud before and after the attack (coordinate units; colours = the points' rgb channels)",
                 fontsize=11)
    return save_figure(fig, figure_stem(out_path))


def _max_n_locator(n: int) -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(n)
