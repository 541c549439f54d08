"""Figures (the only module that imports matplotlib)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
    fig, axes = plt.subplots(
        len(tasks), len(ratios), figsize=(3.2 * len(ratios), 2.6 * len(tasks)), squeeze=False, sharex=True
    )
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
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for name, values in ckas.items():
        ax.errorbar(layers, values, yerr=errors.get(name), marker="o", ms=3, capsize=2, label=name)
    ax.set_xticks(list(layers))
    ax.set_xlabel("layer l")
    ax.set_ylabel("CKA with YY^T")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def kernel_heatmaps(kernels: dict, path: Path) -> Path:
    """Heat maps of every layer's kernel (rows) for every method (columns), training block."""
    names = list(kernels)
    n_layers = len(next(iter(kernels.values())))
    fig, axes = plt.subplots(n_layers, len(names), figsize=(2.2 * len(names), 2.2 * n_layers), squeeze=False)
    for j, name in enumerate(names):
        for l in range(n_layers):
            ax = axes[l][j]
            ax.imshow(kernels[name][l], cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
            if l == 0:
                ax.set_title(name, fontsize=9)
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
    plt.close(fig)
    return path
