"""Figures of run and sweep folders, from their Datasets (drawn by plots.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from .. import plots


def run_figures(ds: xr.Dataset, figures: Path) -> list[Path]:
    """CKA per layer for every estimator, and the kernel heat maps of every layer."""
    estimators = [str(m) for m in ds.estimator.values]
    P = int(ds.attrs["n_train"])
    return [
        plots.cka_by_method(
            ds.layer.values,
            dict(zip(estimators, ds.cka.values, strict=True)),
            dict(zip(estimators, ds.cka_se.values, strict=True)),
            figures / "cka_per_layer.png",
            title=f"{ds.attrs['name']}: {ds.attrs['data']}",
        ),
        plots.kernel_heatmaps(
            dict(zip(estimators, ds.kernel.values[:, :, :P, :P], strict=True)),
            figures / "kernels.png",
            order=np.argsort(ds.Y.values[:, 0], kind="stable"),
        ),
    ]


def sweep_figures(ds: xr.Dataset, figures: Path) -> list[Path]:
    """CKA and adaptation against every swept parameter, |ΔCKA| against 1/N when the width alone is
    swept, and theory against sampled adaptation (and relative miss against N) when networks are sampled."""
    fields = json.loads(ds.attrs["fields"])
    estimators = [str(m) for m in ds.estimator.values]
    images = []
    for dim in (d for d in fields if ds.sizes[d] > 1):
        if not set(fields[dim]) <= {"seed", "data.seed"}:  # replicates are averaged, not plotted
            images.append(_sweep_figure(ds, dim, fields[dim][0], figures / f"cka_vs_{dim}.png"))
        if fields[dim] == ["network.width"] and "nngp" in estimators:  # width alone: fixed P
            images.append(_width_figure(ds, dim, figures / "delta_cka_vs_inv_width.png"))
    if "sampled" in estimators and "nngp" in estimators:
        images.append(_theory_vs_sampled(ds, figures / "theory_vs_sampled.png"))
        for dim in fields:
            if fields[dim][0] == "network.width" and ds.sizes[dim] > 1:
                images.append(_relative_miss_figure(ds, dim, figures / "relative_miss_vs_width.png"))
    return images


def _curves(ds: xr.Dataset, dim: str, x, value) -> list:
    """Lines along `dim`: one per method and per value of one other swept dimension; swept seeds
    are averaged over (replicates), any further dimension is held at its first value."""
    fields = json.loads(ds.attrs["fields"])
    replicates = [d for d in fields if d != dim and set(fields[d]) <= {"seed", "data.seed"}]
    others = [d for d in ds.status.dims if d != dim and d not in replicates]
    group = next((d for d in others if ds.sizes[d] > 1), None)
    fixed = {d: 0 for d in others if d != group}
    styles = ["o-", "s--", "^:", "d-.", "v-"]
    curves = []
    for k, method in enumerate(str(m) for m in ds.estimator.values):
        for g in range(ds.sizes[group]) if group else [None]:
            sub = ds[["cka_out", "cka_out_se"]].isel({**fixed, **({group: g} if group else {})})
            y, yerr = value(sub.mean(replicates) if replicates else sub, method)
            label = method + (f", {group}={ds[group].values[g]}" if group else "")
            style = {"fmt": styles[k % len(styles)], "color": f"C{g or 0}"}
            curves.append((label, x, y, yerr, style))
    note = [f"{d}={ds[d].values[0]}" for d in fixed if ds.sizes[d] > 1]
    note += [f"mean over {ds.sizes[d]} {d}s" for d in replicates]
    return curves, ", ".join(note)


def _x_of(ds: xr.Dataset, dim: str, field: str):
    """x values of a swept dimension: g_w in units of g_c, numbers as they are, else categories."""
    values = ds[dim].values
    if field == "network.g_w" and np.issubdtype(values.dtype, np.number):
        g_c = ds.g_c.mean([d for d in ds.g_c.dims if d != dim]).values
        return values / g_c, "g_w / g_c", None
    if field == "network.g_w_over_g_c":
        return values, "g_w / g_c", None
    if np.issubdtype(values.dtype, np.number):
        return values, field, None
    positions = np.arange(len(values))
    return positions, field, (positions, [str(v) for v in values])


def _sweep_figure(ds: xr.Dataset, dim: str, field: str, path: Path) -> Path:
    x, xlabel, ticks = _x_of(ds, dim, field)
    cka, note = _curves(
        ds,
        dim,
        x,
        lambda sub, m: (sub.cka_out.sel(estimator=m).values, _finite(sub.cka_out_se.sel(estimator=m))),
    )
    delta, _ = _curves(ds, dim, x, lambda sub, m: (_adaptation(sub, m), None))
    panels = [("CKA of the output kernel", "CKA with YY^T", cka)]
    if "nngp" in ds.estimator.values:
        panels.append(("adaptation", "CKA - CKA_NNGP", [c for c in delta if not c[0].startswith("nngp")]))
    gain = xlabel == "g_w / g_c"  # across the edge of chaos: log axis, g_c marked
    if gain:
        ticks = (x, [f"{v:.3g}" for v in x])
    title = f"{ds.attrs['name']} {note}".strip()
    return plots.line_panels(
        panels, path, xlabel, xticks=ticks, logx=gain, vline=1.0 if gain else None, title=title
    )


def _adaptation(sub: xr.Dataset, estimator: str) -> np.ndarray:
    """CKA_estimator - CKA_NNGP of the output kernel."""
    return (sub.cka_out.sel(estimator=estimator) - sub.cka_out.sel(estimator="nngp")).values


def _finite(values):
    """Error bars only where a method has them (sampled)."""
    values = np.nan_to_num(np.asarray(values, dtype=float))
    return values if values.any() else None


def _width_figure(ds: xr.Dataset, dim: str, path: Path) -> Path:
    """|ΔCKA| of the output kernel against 1/N on log axes, with a 1/N reference line."""
    inv = 1.0 / ds[dim].values.astype(float)
    curves, note = _curves(ds, dim, inv, lambda sub, m: (np.abs(_adaptation(sub, m)), None))
    curves = [c for c in curves if not c[0].startswith("nngp")]
    if curves:
        y0 = np.nanmax(curves[0][2])
        ref = y0 * inv / inv.max()
        curves.append(("∝ 1/N", inv, ref, None, {"fmt": "k:"}))
    panel = [("adaptation of the output kernel", "|CKA - CKA_NNGP|", curves)]
    return plots.line_panels(panel, path, "1 / N", logx=True, logy=True, title=note)


def _relative_miss_figure(ds: xr.Dataset, dim: str, path: Path) -> Path:
    """|CKA_theory - CKA_sampled| / |CKA_sampled - CKA_NNGP| of the output kernel against N."""

    def relative_miss(sub, m):
        sampled = _adaptation(sub, "sampled")
        return np.abs(_adaptation(sub, m) - sampled) / np.abs(sampled), None

    widths = ds[dim].values.astype(float)
    curves, note = _curves(ds, dim, widths, relative_miss)
    curves = [c for c in curves if not c[0].startswith(("nngp", "sampled"))]
    panel = [("theory against sampled networks, output kernel", "miss / sampled adaptation", curves)]
    ticks = (widths, [f"{w:g}" for w in widths])
    return plots.line_panels(panel, path, "width N", logx=True, xticks=ticks, hline=0.15, title=note)


def _theory_vs_sampled(ds: xr.Dataset, path: Path) -> Path:
    """Theory against sampled adaptation for every point and every hidden/output layer."""
    nngp = ds.cka.sel(estimator="nngp")
    sampled = (ds.cka.sel(estimator="sampled") - nngp).values[..., 1:].ravel()
    se = ds.cka_se.sel(estimator="sampled").values[..., 1:].ravel()
    keep = np.isfinite(sampled)
    theory = {
        str(m): (ds.cka.sel(estimator=m) - nngp).values[..., 1:].ravel()[keep]
        for m in ds.estimator.values
        if str(m) not in ("nngp", "sampled")
    }
    return plots.adaptation_scatter(sampled[keep], 2 * se[keep], theory, path, title=ds.attrs["name"])
