"""Figures of run and sweep folders, from their Datasets (drawn by plots.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from .. import plots
from ..plots import PanelAxes
from .config import ExperimentConfig
from .labels import (
    ADAPTATION_LABEL,
    CKA_OUT_LABEL,
    estimator_label,
    failed,
    field_label,
    field_symbol,
    references,
    result_failed,
    shared,
)
from .merge import ok_points, point_attrs
from .runner import derived


def run_title(ds: xr.Dataset) -> str:
    """ "name: data, L, N, P, alpha = P/N, g_w/g_c" of a run, in mathtext."""
    title = f"{ds.attrs['name']}: {ds.attrs['data']}"
    try:
        config = ExperimentConfig.model_validate_json(ds.attrs["config"])
        values = derived(config, int(ds.attrs["n_train"]))
    except Exception:  # a results file without a readable config: the short title
        return title
    net = config.network
    parts = [
        f"$L = {net.depth}$",
        f"$N = {net.width}$",
        f"$P = {values['P']}$",
        f"$\\alpha = {values['alpha']:.3g}$",
    ]
    if np.ndim(values["g_w"]) == 0 and np.isfinite(values["g_c"]):
        parts.append(f"$g_w/g_c = {values['g_w'] / values['g_c']:.3g}$")
    return title + "\n" + ", ".join(parts)


def run_figures(ds: xr.Dataset, figures: Path) -> list[Path]:
    """CKA per layer for every estimator (error bars where it has an SE), and the kernel heat maps
    of every layer with the inputs sorted by class and lines between the classes."""
    estimators = [str(m) for m in ds.estimator.values]
    labels = [estimator_label(m, ds.attrs) for m in estimators]
    P = int(ds.attrs["n_train"])
    y = ds.Y.values[:, 0]
    order = np.argsort(y, kind="stable")
    changes = np.flatnonzero(np.diff(y[order]) != 0) + 1
    boundaries = tuple(changes) if len(changes) < 10 else ()  # classes, not a continuous target
    title = run_title(ds)
    return [
        plots.cka_by_method(
            ds.layer.values,
            dict(zip(labels, ds.cka.values, strict=True)),
            dict(zip(labels, ds.cka_se.values, strict=True)),
            figures / "cka_per_layer.png",
            title=title,
        ),
        plots.kernel_heatmaps(
            dict(zip(labels, ds.kernel.values[:, :, :P, :P], strict=True)),
            figures / "kernels.png",
            order=order,
            title=title + ", inputs sorted by class",
            boundaries=boundaries,
        ),
    ]


def _method_labels(ds: xr.Dataset) -> dict:
    """Legend names of the estimators of a sweep: their methods where every point used the same (the
    methods joined where they differ), a reference flagged where some point failed its diagnostics."""
    points = [point_attrs(ds, where) for where in ok_points(ds)]
    labels = {str(m): estimator_label(str(m), shared(points), flag=False) for m in ds.estimator.values}
    for name in labels:
        methods = list(dict.fromkeys(str(p[f"{name}_method"]) for p in points if p.get(f"{name}_method")))
        if len(methods) > 1:
            labels[name] = estimator_label(name, {f"{name}_method": " / ".join(methods)}, flag=False)
    for name in references(labels):
        count = sum(failed(p, name) for p in points)
        if count:
            labels[name] += f", not converged at {count} point(s)"
    return labels


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
        if "data.n_train" in fields[dim] and "test_loss" in ds and np.isfinite(ds.test_loss.values).any():
            images.append(_learning_curve(ds, dim, figures / "learning_curve.png"))
    if "sampled" in estimators and "nngp" in estimators:
        images.append(_theory_vs_sampled(ds, figures / "theory_vs_sampled.png"))
        for dim in fields:
            if fields[dim][0] == "network.width" and ds.sizes[dim] > 1:
                images.append(_relative_miss_figure(ds, dim, figures / "relative_miss_vs_width.png"))
                images.append(_captured_figure(ds, dim, figures / "captured_vs_width.png"))
    return images


def _curves(ds: xr.Dataset, dim: str, x, value, var: str = "cka_out") -> tuple[list, str]:
    """Lines along `dim` of `var` (and its SE, var_se): one per method and per value of one other
    swept dimension; swept seeds are averaged over (replicates), any further dimension is held at its
    first value."""
    fields = json.loads(ds.attrs["fields"])
    replicates = [d for d in fields if d != dim and set(fields[d]) <= {"seed", "data.seed"}]
    others = [d for d in ds.status.dims if d != dim and d not in replicates]
    group = next((d for d in others if ds.sizes[d] > 1), None)
    fixed = {d: 0 for d in others if d != group}
    styles = ["o-", "s--", "^:", "d-.", "v-"]
    names = _method_labels(ds)
    curves = []
    for k, method in enumerate(str(m) for m in ds.estimator.values):
        for g in range(ds.sizes[group]) if group else [None]:
            sub = ds[[var, f"{var}_se"]].isel({**fixed, **({group: g} if group else {})})
            y, yerr = value(_replicate_mean(sub, replicates, var) if replicates else sub, method)
            label = names[method] + (f", {_symbol(fields, group)} = {ds[group].values[g]}" if group else "")
            style = {"fmt": styles[k % len(styles)], "color": f"C{g or 0}"}
            curves.append((method, label, x, y, yerr, style))
    note = [f"{_symbol(fields, d)} = {ds[d].values[0]}" for d in fixed if ds.sizes[d] > 1]
    note += [f"mean over {ds.sizes[d]} {field_label(fields[d][0])}s" for d in replicates]
    return curves, ", ".join(note)


def _replicate_mean(sub: xr.Dataset, replicates: list[str], var: str = "cka_out") -> xr.Dataset:
    """Mean of `var` over independent replicates, with the SE of that mean: sqrt(sum SE^2) / n."""
    n = int(np.prod([sub.sizes[d] for d in replicates]))
    se = np.sqrt((sub[f"{var}_se"] ** 2).sum(replicates)) / n
    return xr.Dataset({var: sub[var].mean(replicates), f"{var}_se": se})


def _symbol(fields: dict, dim: str) -> str:
    return field_symbol(fields[dim][0])


def _x_of(ds: xr.Dataset, dim: str, field: str):
    """x values of a swept dimension: g_w in units of g_c, numbers as they are, else categories."""
    values = ds[dim].values
    if field == "network.g_w" and np.issubdtype(values.dtype, np.number):
        g_c = ds.g_c.mean([d for d in ds.g_c.dims if d != dim]).values
        return values / g_c, "$g_w/g_c$", None
    if field == "network.g_w_over_g_c":
        return values, "$g_w/g_c$", None
    if np.issubdtype(values.dtype, np.number) and not np.issubdtype(values.dtype, np.bool_):
        return values, field_label(field), None
    positions = np.arange(len(values))
    return positions, field_label(field), (positions, [str(v) for v in values])


def _sweep_figure(ds: xr.Dataset, dim: str, field: str, path: Path) -> Path:
    x, xlabel, ticks = _x_of(ds, dim, field)
    se = lambda sub, m: _finite(sub.cka_out_se.sel(estimator=m))  # noqa: E731
    cka, note = _curves(ds, dim, x, lambda sub, m: (sub.cka_out.sel(estimator=m).values, se(sub, m)))
    delta, _ = _curves(ds, dim, x, lambda sub, m: (_adaptation(sub, m), se(sub, m)))
    panels = [("CKA of the output kernel", CKA_OUT_LABEL, [c[1:] for c in cka])]
    if "nngp" in ds.estimator.values:
        panels.append(
            ("adaptation of the output kernel", ADAPTATION_LABEL, [c[1:] for c in delta if c[0] != "nngp"])
        )
    gain = xlabel == "$g_w/g_c$"  # across the edge of chaos: log axis, g_c marked
    if gain:
        ticks = (x, [f"{v:.3g}" for v in x])
    title = f"{ds.attrs['name']} {note}".strip()
    integer = field in ("network.depth", "network.width", "data.n_train", "seed", "data.seed")
    axes = PanelAxes(
        xlabel,
        xticks=ticks,
        logx=gain,
        vline=1.0 if gain else None,
        categorical=ticks is not None and not gain,
        integer=integer,
    )
    return plots.line_panels(panels, path, axes, title=title)


def _learning_curve(ds: xr.Dataset, dim: str, path: Path) -> Path:
    """Test loss and test mse of each estimator's posterior predictive (T21) against P on log axes,
    with SEs; sampled networks as points (ground truth), theories as lines."""
    fields = json.loads(ds.attrs["fields"])
    first = fields[dim][0] == "data.n_train"
    P = ds[dim].values if first else ds[zipped_coordinate(ds, dim, "data.n_train")].values
    panels = []
    for var, name in (("test_loss", "test loss (with the predictive variance)"), ("test_mse", "test mse")):

        def value(sub, m, var=var):
            return sub[var].sel(estimator=m).values, _finite(sub[f"{var}_se"].sel(estimator=m))

        curves, note = _curves(ds, dim, P, value, var)
        curves = [
            (c[1], c[2], c[3], c[4], {**c[5], "fmt": "o", "color": "k"} if c[0] == "sampled" else c[5])
            for c in curves
        ]
        panels.append((name, name.split(" (")[0], curves))
    axes = PanelAxes("P (training inputs)", logx=True, logy=True, integer=True)
    return plots.line_panels(panels, path, axes, title=f"{ds.attrs['name']} {note}".strip())


def zipped_coordinate(ds: xr.Dataset, dim: str, field: str) -> str:
    """The coordinate name merge gives a zipped field (its leaf, or its full path on a collision)."""
    leaf = field.split(".")[-1]
    return leaf if leaf in ds.coords and ds[leaf].dims == (dim,) else field.replace(".", "_")


def _adaptation(sub: xr.Dataset, estimator: str) -> np.ndarray:
    """CKA_estimator - CKA_NNGP of the output kernel."""
    return (sub.cka_out.sel(estimator=estimator) - sub.cka_out.sel(estimator="nngp")).values


def _finite(values):
    """Error bars only where a method has them (not the exact NNGP or linear_exact)."""
    values = np.nan_to_num(np.asarray(values, dtype=float))
    return values if values.any() else None


def _width_figure(ds: xr.Dataset, dim: str, path: Path) -> Path:
    """|ΔCKA| of the output kernel against 1/N on log axes, with a 1/N reference line."""
    inv = 1.0 / ds[dim].values.astype(float)
    se = lambda sub, m: _finite(sub.cka_out_se.sel(estimator=m))  # noqa: E731
    curves, note = _curves(ds, dim, inv, lambda sub, m: (np.abs(_adaptation(sub, m)), se(sub, m)))
    curves = [c[1:] for c in curves if c[0] != "nngp"]
    if curves:
        y0 = np.nanmax(curves[0][2])
        ref = y0 * inv / inv.max()
        curves.append(("$\\propto 1/N$", inv, ref, None, {"fmt": "k:"}))
    panel = [("adaptation of the output kernel", f"$|${ADAPTATION_LABEL}$|$", curves)]
    title = f"{ds.attrs['name']} {note}".strip()
    return plots.line_panels(panel, path, PanelAxes("$1/N$", logx=True, logy=True), title=title)


def _relative_miss_figure(ds: xr.Dataset, dim: str, path: Path) -> Path:
    """|CKA_theory - CKA_sampled| / |CKA_sampled - CKA_NNGP| of the output kernel against N."""

    def relative_miss(sub, m):  # error bar: combined SE of the miss over the sampled adaptation
        sampled = _adaptation(sub, "sampled")
        se = np.hypot(*(np.nan_to_num(sub.cka_out_se.sel(estimator=e).values) for e in (m, "sampled")))
        return np.abs(_adaptation(sub, m) - sampled) / np.abs(sampled), _finite(se / np.abs(sampled))

    widths = ds[dim].values.astype(float)
    curves, note = _curves(ds, dim, widths, relative_miss)
    curves = [c[1:] for c in curves if c[0] not in ("nngp", "sampled")]
    panel = [("theory against sampled networks, output kernel", "miss / sampled adaptation", curves)]
    ticks = (widths, [f"{w:g}" for w in widths])
    title = f"{ds.attrs['name']} {note}".strip()
    axes = PanelAxes("width $N$", logx=True, xticks=ticks, hline=0.15)
    return plots.line_panels(panel, path, axes, title=title)


def _captured_figure(ds: xr.Dataset, dim: str, path: Path) -> Path:
    """Captured fraction (CKA_theory - CKA_NNGP) / (CKA_sampled - CKA_NNGP) of every hidden layer against
    N (1: the theory has the sampled networks' adaptation); error bars: combined SE / sampled adaptation."""

    def captured(sub, m):
        sampled = _adaptation(sub, "sampled")
        se = np.hypot(*(np.nan_to_num(sub.cka_out_se.sel(estimator=e).values) for e in (m, "sampled")))
        return _adaptation(sub, m) / sampled, _finite(se / np.abs(sampled))

    fields = json.loads(ds.attrs["fields"])
    widths = ds[dim].values.astype(float)
    labels = [f"{w:g}" for w in widths]
    if "data.n_train" in fields[dim]:  # N and P swept together (fixed alpha): say both
        labels = [f"{w:g}\n(P = {p})" for w, p in zip(widths, ds["n_train"].values, strict=True)]
    unconverged = "not converged" in _method_labels(ds).get("sampled", "")
    if unconverged:  # mark the widths whose sampled reference failed its diagnostics at some point
        bad = xr.apply_ufunc(np.vectorize(result_failed, otypes=[bool]), ds.sampled_result)
        failed = bad.any([d for d in bad.dims if d != dim]).values
        labels = [label + (" *" if bad else "") for label, bad in zip(labels, failed, strict=True)]
    panels, note = [], ""
    for layer in range(1, ds.sizes["layer"]):
        per_layer = ds.assign(cka_out=ds.cka.isel(layer=layer), cka_out_se=ds.cka_se.isel(layer=layer))
        curves, note = _curves(per_layer, dim, widths, captured)
        curves = [c[1:] for c in curves if c[0] not in ("nngp", "sampled")]
        panels.append((f"layer {layer}", "captured fraction of the sampled adaptation", curves))
    title = f"{ds.attrs['name']} {note}".strip()
    if unconverged:
        title += " (*: the sampled reference failed its diagnostics there)"
    axes = PanelAxes("width $N$", logx=True, xticks=(widths, labels), hline=1.0)
    return plots.line_panels(panels, path, axes, title=title)


def _theory_vs_sampled(ds: xr.Dataset, path: Path) -> Path:
    """Theory against sampled adaptation for every point and every hidden/output layer."""
    nngp = ds.cka.sel(estimator="nngp")
    sampled = (ds.cka.sel(estimator="sampled") - nngp).values[..., 1:].ravel()
    se = ds.cka_se.sel(estimator="sampled").values[..., 1:].ravel()
    keep = np.isfinite(sampled)
    names = _method_labels(ds)
    theory = {
        names[str(m)]: (
            (ds.cka.sel(estimator=m) - nngp).values[..., 1:].ravel()[keep],
            _finite(2 * ds.cka_se.sel(estimator=m).values[..., 1:].ravel()[keep]),
        )
        for m in ds.estimator.values
        if str(m) not in ("nngp", "sampled")
    }
    return plots.adaptation_scatter(sampled[keep], 2 * se[keep], theory, path, title=ds.attrs["name"])
