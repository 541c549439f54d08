"""Figures (the only module that imports matplotlib).

Figures are matplotlib `Figure` objects saved directly: no pyplot, no backend switch, no global
state touched, so importing this module leaves `matplotlib.get_backend()` as it was.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure


def _subplots(rows: int, columns: int, figsize, **kwargs):
    """A pyplot-free Figure and its (rows, columns) array of axes."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, columns, squeeze=False, **kwargs)


def cka_per_layer(rows, path: Path, title: str = "") -> Path:
    """CKA against layer, one panel per (task, g_w/g_c), one line per kernel (NNGP, theory, ...).

    Args:
      rows: iterable of (task, g_w_over_g_c, kernel_label, cka_per_layer) tuples.
      path: PNG file to write (a PDF is written beside it).
    """
    rows = list(rows)
    panels = sorted({(task, ratio) for task, ratio, _, _ in rows}, key=lambda p: (p[0], p[1]))
    tasks = sorted({task for task, _ in panels})
    ratios = sorted({ratio for _, ratio in panels})
    fig, axes = _subplots(len(tasks), len(ratios), (3.2 * len(ratios), 2.6 * len(tasks)), sharex=True)
    for task, ratio, label, ckas in rows:
        ax = axes[tasks.index(task)][ratios.index(ratio)]
        ax.plot(range(len(ckas)), ckas, marker="o", ms=3, label=label)
        ax.set_title(f"{task}, g_w = {ratio:g} g_c", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("layer l")
    for row in axes:
        row[0].set_ylabel("CKA with YY^T")
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def cka_by_method(layers, ckas: dict, errors: dict, path: Path, title: str = "") -> Path:
    """CKA against layer for each method, with error bars where a method has them."""
    fig, axes = _subplots(1, 1, (4.5, 3.2))
    ax = axes[0][0]
    for name, values in ckas.items():
        ax.errorbar(layers, values, yerr=errors.get(name), marker="o", ms=3, capsize=2, label=name)
    ax.set_xticks(list(layers))
    ax.set_xlabel("layer l")
    ax.set_ylabel("CKA with YY^T")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def kernel_heatmaps(kernels: dict, path: Path, order=None) -> Path:
    """Heat maps of every layer's kernel (rows) for every estimator, then of each estimator's
    adaptation K - K_NNGP; one colour scale per row for the kernels and one for the adaptations.

    Args:
      kernels: estimator name -> (L+1, P, P) training-block kernels; "nngp" first if present.
      order: optional permutation of the P inputs (e.g. sorted by label) to show block structure.
    """
    names = list(kernels)
    stacks = {
        k: np.asarray(v) if order is None else np.asarray(v)[:, order][:, :, order]
        for k, v in kernels.items()
    }
    deltas = {f"{k} - nngp": stacks[k] - stacks["nngp"] for k in names if k != "nngp" and "nngp" in names}
    n_layers = len(stacks[names[0]])
    columns = len(names) + len(deltas)
    fig, axes = _subplots(n_layers, columns, (2.0 * columns, 2.0 * n_layers))
    for l in range(n_layers):
        lo = min(stacks[k][l].min() for k in names)
        hi = max(stacks[k][l].max() for k in names)
        top = max([np.abs(d[l]).max() for d in deltas.values()] + [1e-300])
        panels = [(k, stacks[k][l], "viridis", lo, hi) for k in names]
        panels += [(k, d[l], "RdBu_r", -top, top) for k, d in deltas.items()]
        for j, (name, image, cmap, vmin, vmax) in enumerate(panels):
            ax = axes[l][j]
            ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if l == 0:
                ax.set_title(name, fontsize=8)
            if j == 0:
                ax.set_ylabel(f"C{l}", fontsize=9)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    """Write the figure as PNG and, beside it, PDF."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    fig.savefig(path.with_suffix(".pdf"))
    return path


def line_panels(
    panels, path: Path, xlabel: str, *, logx=False, logy=False, xticks=None, vline=None, hline=None, title=""
) -> Path:
    """Side-by-side panels of lines with optional error bars.

    Args:
      panels: list of (panel title, y label, curves); a curve is (label, x, y, yerr or None, style),
        style a dict of matplotlib keyword arguments.
      xticks: optional (positions, labels) for categorical x; vline, hline: dashed marker lines.
    """
    fig, axes = _subplots(1, len(panels), (4.4 * len(panels), 3.4))
    for ax, (name, ylabel, curves) in zip(axes[0], panels, strict=True):
        for label, x, y, yerr, style in curves:
            ax.errorbar(x, y, yerr=yerr, capsize=2, ms=4, label=label, **style)
        ax.set_xscale("log" if logx else "linear")
        ax.set_yscale("log" if logy else "linear")
        if xticks is not None:
            ax.set_xticks(*xticks)
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if vline is not None:
            ax.axvline(vline, color="0.6", ls="--", lw=0.8)
        if hline is not None:
            ax.axhline(hline, color="0.6", ls="--", lw=0.8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(name, fontsize=9)
        handles = ax.get_legend_handles_labels()[0]
        if handles:
            ax.legend(fontsize=5.5, ncol=2 if len(handles) > 6 else 1)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def adaptation_scatter(sampled, sampled_se, theory: dict, path: Path, title: str = "") -> Path:
    """Theory against sampled adaptation CKA - CKA_NNGP with the ±15 % band around y = x; log axes
    when every adaptation is positive."""
    fig, axes = _subplots(1, 1, (4.4, 4.0))
    ax = axes[0][0]
    values = np.concatenate([np.asarray(sampled, float), *[np.asarray(v, float) for v in theory.values()]])
    positive = bool((values > 0).all())
    lo, hi = (values.min() / 1.5, values.max() * 1.5) if positive else (values.min(), values.max())
    line = np.geomspace(lo, hi, 50) if positive else np.linspace(lo, hi, 50)
    ax.plot(line, line, "k-", lw=0.8)
    ax.fill_between(line, 0.85 * line, 1.15 * line, color="0.85", label="±15 %")
    for name, values in theory.items():
        ax.errorbar(sampled, values, xerr=sampled_se, fmt="o", ms=4, capsize=2, label=name)
    if positive:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("sampled networks: CKA - CKA_NNGP")
    ax.set_ylabel("theory: CKA - CKA_NNGP")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)
