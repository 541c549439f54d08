"""Figures (the only module that imports matplotlib).

Figures are matplotlib `Figure` objects saved directly: no pyplot, no backend switch, no global
state touched, so importing this module leaves `matplotlib.get_backend()` as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure

CKA_LABEL = r"$\mathrm{CKA}(C^{(\ell)}, YY^\top)$"
ADAPTATION_LABEL = r"$\mathrm{CKA} - \mathrm{CKA}_\mathrm{NNGP}$"
LAYER_LABEL = r"layer $\ell$"


def _subplots(rows: int, columns: int, figsize, layout=None, **kwargs):
    """A pyplot-free Figure and its (rows, columns) array of axes."""
    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(rows, columns, squeeze=False, **kwargs)


def _integer_axis(ax, values) -> None:
    """Integer ticks only (layers): every value when there are few, else integer locations."""
    values = list(values)
    if len(values) <= 12:  # labelled as integers on log axes too (after set_xscale, which resets them)
        ax.set_xticks(values, [str(v) for v in values])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    else:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))


def cka_per_layer(rows, path: Path, title: str = "") -> Path:
    """CKA against layer with its Monte Carlo SE as error bars, one panel per (task, g_w/g_c), one
    line per kernel (NNGP, theory, ...); one legend below the panels, covering none of them.

    Args:
      rows: iterable of (task, g_w_over_g_c, kernel_label, cka_per_layer, cka_se_per_layer) tuples
        (an SE that is NaN, unknown, draws no bar).
      path: PNG file to write (a PDF is written beside it).
    """
    rows = list(rows)
    panels = sorted({(task, ratio) for task, ratio, *_ in rows}, key=lambda p: (p[0], p[1]))
    tasks = sorted({task for task, _ in panels})
    ratios = sorted({ratio for _, ratio in panels})
    size = (3.2 * len(ratios), 2.6 * len(tasks) + 0.8)
    fig, axes = _subplots(len(tasks), len(ratios), size, layout="constrained", sharex=True)
    colours = {}  # one colour per kernel label across the panels
    for task, ratio, label, ckas, se in rows:
        ax = axes[tasks.index(task)][ratios.index(ratio)]
        colour = colours.setdefault(label, f"C{len(colours)}")
        layers = range(len(ckas))
        ax.errorbar(
            layers, ckas, yerr=np.nan_to_num(se), marker="o", ms=3, capsize=2, color=colour, label=label
        )
        ax.set_title(f"{task}, $g_w = {ratio:g}\\,g_c$", fontsize=9)
        _integer_axis(ax, layers)
    for ax in axes[-1]:
        ax.set_xlabel(LAYER_LABEL)
    for row in axes:
        row[0].set_ylabel(CKA_LABEL)
    handles = {}
    for ax in axes.ravel():  # every label once, whichever panel has it (a MAP may fall back in one)
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(
        handles.values(), handles.keys(), loc="outside lower center", ncols=min(4, len(handles)), fontsize=7
    )
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def cka_by_method(layers, ckas: dict, errors: dict, path: Path, title: str = "") -> Path:
    """CKA against layer for each method (legend: the dict keys), with error bars where a method's
    errors are positive somewhere (sampled networks)."""
    fig, axes = _subplots(1, 1, (5.0, 3.6))
    ax = axes[0][0]
    for name, values in ckas.items():
        err = errors.get(name)
        err = None if err is None or not np.any(np.nan_to_num(np.asarray(err, float)) > 0) else err
        ax.errorbar(layers, values, yerr=err, marker="o", ms=3, capsize=2, label=name)
    _integer_axis(ax, layers)
    ax.set_xlabel(LAYER_LABEL)
    ax.set_ylabel(CKA_LABEL)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=8)
    return _save(fig, path)


def kernel_heatmaps(kernels: dict, path: Path, order=None, *, title: str = "", boundaries=()) -> Path:
    """Heat maps of every layer's kernel (rows) for every estimator, then of each estimator's
    adaptation K - K_NNGP; one colour scale (with its colour bar) per row for the kernels and one
    for the adaptations; lines between the classes.

    Args:
      kernels: label -> (L+1, P, P) training-block kernels; the first entry is the NNGP baseline.
      order: optional permutation of the P inputs (e.g. sorted by label) to show block structure.
      title: figure title (e.g. L, N, P, alpha and g_w/g_c).
      boundaries: positions (in the ordered inputs) where a new class starts; drawn as lines.
    """
    names = list(kernels)
    stacks = {
        k: np.asarray(v) if order is None else np.asarray(v)[:, order][:, :, order]
        for k, v in kernels.items()
    }
    base = names[0]
    deltas = {f"{k} $-$ {base}": stacks[k] - stacks[base] for k in names[1:]}
    n_layers = len(stacks[base])
    columns = len(names) + len(deltas)
    fig, axes = _subplots(
        n_layers, columns, (2.1 * columns + 1.4, 2.0 * n_layers + 0.6), layout="constrained"
    )
    for l in range(n_layers):
        lo = min(stacks[k][l].min() for k in names)
        hi = max(stacks[k][l].max() for k in names)
        top = max([np.abs(d[l]).max() for d in deltas.values()] + [1e-300])
        panels = [(k, stacks[k][l], "viridis", lo, hi) for k in names]
        panels += [(k, d[l], "RdBu_r", -top, top) for k, d in deltas.items()]
        images = []
        for j, (name, image, cmap, vmin, vmax) in enumerate(panels):
            ax = axes[l][j]
            images.append(ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest"))
            for b in boundaries:
                ax.axhline(b - 0.5, color="w" if cmap == "viridis" else "k", lw=0.7)
                ax.axvline(b - 0.5, color="w" if cmap == "viridis" else "k", lw=0.7)
            ax.set_xticks([])
            ax.set_yticks([])
            if l == 0:
                ax.set_title(name, fontsize=7)
            if j == 0:
                ax.set_ylabel(f"$C^{{({l})}}$", fontsize=10)
        cbar = fig.colorbar(images[0], ax=list(axes[l][: len(names)]), shrink=0.85, pad=0.01)
        cbar.ax.tick_params(labelsize=6)
        if deltas:
            cbar = fig.colorbar(images[-1], ax=list(axes[l][len(names) :]), shrink=0.85, pad=0.01)
            cbar.ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    """Write the figure as PNG and, beside it, PDF."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    fig.savefig(path.with_suffix(".pdf"))
    return path


@dataclass(frozen=True)
class PanelAxes:
    """The axes of `line_panels`: x label, log scales, optional (positions, labels) x ticks for
    categorical x, dashed marker lines at x = vline and y = hline; categorical: x is a category
    (e.g. the task): points, no lines, each curve shifted a little; integer: x takes integer values
    only (e.g. the depth): integer ticks."""

    xlabel: str
    logx: bool = False
    logy: bool = False
    xticks: tuple | None = None
    vline: float | None = None
    hline: float | None = None
    categorical: bool = False
    integer: bool = False


def line_panels(panels, path: Path, axes: PanelAxes, title: str = "") -> Path:
    """Side-by-side panels of lines with optional error bars.

    Args:
      panels: list of (panel title, y label, curves); a curve is (label, x, y, yerr or None, style),
        style a dict of matplotlib keyword arguments.
      axes: the axes of every panel (PanelAxes).
    """
    a = axes
    fig, grid = _subplots(1, len(panels), (4.6 * len(panels), 3.6))
    for ax, (name, ylabel, curves) in zip(grid[0], panels, strict=True):
        for k, (label, x, y, yerr, style) in enumerate(curves):
            if a.categorical:
                style = {**style, "fmt": style.get("fmt", "o")[:1]}  # a marker, no line
                x = np.asarray(x, float) + 0.06 * (k - (len(curves) - 1) / 2)
            ax.errorbar(x, y, yerr=yerr, capsize=2, ms=4, label=label, **style)
        ax.set_xscale("log" if a.logx else "linear")
        ax.set_yscale("log" if a.logy else "linear")
        if a.integer and a.xticks is None:
            _integer_axis(ax, sorted({int(v) for c in curves for v in np.asarray(c[1]).ravel()}))
        if a.xticks is not None:
            ax.set_xticks(*a.xticks)
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if a.vline is not None:
            ax.axvline(a.vline, color="0.6", ls="--", lw=0.8)
        if a.hline is not None:
            ax.axhline(a.hline, color="0.6", ls="--", lw=0.8)
        ax.set_xlabel(a.xlabel)
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
    when every adaptation is positive. `theory` maps a label to (values, error bars or None)."""
    fig, axes = _subplots(1, 1, (4.4, 4.0))
    ax = axes[0][0]
    values = np.concatenate([np.asarray(sampled, float), *[np.asarray(v, float) for v, _ in theory.values()]])
    values = values[np.isfinite(values)]
    positive = bool((values > 0).all())
    lo, hi = (values.min() / 1.5, values.max() * 1.5) if positive else (values.min(), values.max())
    line = np.geomspace(lo, hi, 50) if positive else np.linspace(lo, hi, 50)
    ax.plot(line, line, "k-", lw=0.8)
    ax.fill_between(line, 0.85 * line, 1.15 * line, color="0.85", label="±15 %")
    for name, (values, yerr) in theory.items():
        ax.errorbar(sampled, values, xerr=sampled_se, yerr=yerr, fmt="o", ms=4, capsize=2, label=name)
    if positive:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("sampled networks: " + ADAPTATION_LABEL)
    ax.set_ylabel("theory: " + ADAPTATION_LABEL)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)
