"""Run folders: config.toml, results.nc, figures/, report.md, report.html, meta.json."""

from __future__ import annotations

import html
import json
import os
import platform
import tempfile
from pathlib import Path

import jax
import numpy as np
import tomli_w
import xarray as xr

from .. import plots
from ..errors import InputError
from .config import ExperimentConfig


def atomic_write(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _drop_none(value):
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def write_run(ds: xr.Dataset, config: ExperimentConfig, out: Path) -> Path:
    """Write the run folder of DESIGN.md and return it."""
    out = Path(out)
    atomic_write(out / "config.toml", tomli_w.dumps(_drop_none(config.model_dump(mode="json"))).encode())
    atomic_write(out / "results.nc", ds.to_netcdf(engine="scipy"))
    meta = {
        "name": config.name,
        "seed": config.seed,
        "timings": json.loads(ds.attrs["timings"]),
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "numpy": np.__version__,
            "xarray": xr.__version__,
        },
        "convergence": {
            k: _plain(v) for k, v in ds.attrs.items() if k.startswith(("map_", "sampl", "rhat", "acc"))
        },
    }
    atomic_write(out / "meta.json", json.dumps(meta, indent=2).encode())
    write_report(out, ds)
    return out


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def read_netcdf(path: Path, advice: str) -> xr.Dataset:
    """A NetCDF file loaded into memory (the file is closed again); InputError if it is missing."""
    if not Path(path).exists():
        raise InputError(f"DIR: {path} does not exist; {advice}")
    with xr.open_dataset(path, engine="scipy") as ds:
        return ds.load()


def load_results(out: Path) -> xr.Dataset:
    """The Dataset of a run folder."""
    return read_netcdf(Path(out) / "results.nc", "run an experiment first")


def write_report(out: Path, ds: xr.Dataset) -> None:
    """Figures and report.md / report.html from a results Dataset."""
    out = Path(out)
    figures = out / "figures"
    methods = [str(m) for m in ds.estimator.values]
    P = int(ds.attrs["n_train"])
    cka, cka_se, errors = ds.cka.values, ds.cka_se.values, ds.test_error.values  # rows follow `methods`
    plots.cka_by_method(
        ds.layer.values,
        dict(zip(methods, cka, strict=True)),
        dict(zip(methods, cka_se, strict=True)),
        figures / "cka_per_layer.png",
        title=f"{ds.attrs['name']}: {ds.attrs['data']}",
    )
    plots.kernel_heatmaps(
        dict(zip(methods, ds.kernel.values[:, :, :P, :P], strict=True)),
        figures / "kernels.png",
        order=np.argsort(ds.Y.values[:, 0], kind="stable"),
    )
    rows = [
        f"| {m} | " + " | ".join(f"{c:.4f}" for c in cka[i]) + f" | {errors[i]:.3f} |"
        for i, m in enumerate(methods)
    ]
    header = "| kernel | " + " | ".join(f"C{l}" for l in ds.layer.values) + " | test error |"
    lines = [
        f"# {ds.attrs['name']}",
        "",
        f"Data: {ds.attrs['data']}, P = {P}.",
        "",
        "## CKA with the target kernel per layer (T16)",
        "",
        header,
        "|" + "---|" * (len(ds.layer) + 2),
        *rows,
        "",
        "![CKA per layer](figures/cka_per_layer.png)",
        "",
        "![Kernels](figures/kernels.png)",
        "",
        *agreement_lines([(ds.attrs["name"], ds.cka, ds.cka_se)]),
        "## Convergence and diagnostics",
        "",
        *[
            f"- {k}: {_plain(v)}"
            for k, v in ds.attrs.items()
            if k.startswith(("map_", "sampl", "rhat", "acc"))
        ],
        f"- timings [s]: {ds.attrs['timings']}",
    ]
    text = "\n".join(lines) + "\n"
    atomic_write(out / "report.md", text.encode())
    body = "".join(_html_line(line) for line in lines)
    atomic_write(out / "report.html", f"<!doctype html><html><body>{body}</body></html>\n".encode())


def agreement(cka: xr.DataArray, cka_se: xr.DataArray) -> list[dict]:
    """Theory against sampled networks, per theory estimator and layer l >= 1 of one experiment.

    miss = |CKA_theory - CKA_sampled|; the criterion is miss <= 2 SE + 0.15 |CKA_sampled - CKA_NNGP|
    (SE of the sampled CKA); relative miss = miss / |CKA_sampled - CKA_NNGP|.
    """
    names = [str(e) for e in cka.estimator.values]
    if "sampled" not in names or "nngp" not in names:
        return []
    sampled, se = cka.sel(estimator="sampled").values, cka_se.sel(estimator="sampled").values
    adaptation = sampled - cka.sel(estimator="nngp").values
    rows = []
    for name in (n for n in names if n not in ("nngp", "sampled")):
        theory = cka.sel(estimator=name).values
        for l in range(1, len(sampled)):
            if not np.isfinite(sampled[l]):
                continue
            miss = abs(theory[l] - sampled[l])
            rows.append(
                dict(
                    estimator=name,
                    layer=l,
                    adaptation=adaptation[l],
                    se=se[l],
                    theory_adaptation=theory[l] - (sampled[l] - adaptation[l]),
                    relative_miss=miss / abs(adaptation[l]),
                    within=bool(miss <= 2 * se[l] + 0.15 * abs(adaptation[l])),
                )
            )
    return rows


def agreement_lines(items) -> list[str]:
    """Markdown table of `agreement` for (label, cka, cka_se) items; empty when nothing was sampled."""
    rows = [(label, r) for label, cka, cka_se in items for r in agreement(cka, cka_se)]
    if not rows:
        return []
    lines = [
        "## Theory against sampled networks",
        "",
        "Adaptation = CKA − CKA_NNGP; criterion: |CKA_theory − CKA_sampled| ≤ 2 SE + 15 % of the "
        "sampled adaptation.",
        "",
        "| point | estimator | layer | sampled adaptation ± SE | theory adaptation | miss / adaptation "
        "| within |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in rows:
        lines.append(
            f"| {label} | {r['estimator']} | {r['layer']} | {r['adaptation']:.5f} ± {r['se']:.5f} | "
            f"{r['theory_adaptation']:.5f} | {r['relative_miss']:.3f} | {'yes' if r['within'] else 'NO'} |"
        )
    return [*lines, ""]


def _html_line(line: str) -> str:
    if line.startswith("# "):
        return f"<h1>{html.escape(line[2:])}</h1>"
    if line.startswith("## "):
        return f"<h2>{html.escape(line[3:])}</h2>"
    if line.startswith("!["):
        src = line[line.index("(") + 1 : -1]
        return f'<p><img src="{html.escape(src)}" width="720"></p>'
    if line.startswith("|"):
        if set(line) <= {"|", "-"}:
            return ""
        cells = "".join(f"<td>{html.escape(c.strip())}</td>" for c in line.strip("|").split("|"))
        return f"<table><tr>{cells}</tr></table>"
    return f"<p>{html.escape(line)}</p>" if line else ""


def write_sweep_report(out: Path, ds: xr.Dataset) -> None:
    """Sweep figures (CKA and adaptation against every swept parameter, ΔCKA against 1/N, theory
    against sampled) and report.md / report.html from a merged sweep Dataset."""
    out = Path(out)
    figures = out / "figures"
    fields = json.loads(ds.attrs["fields"])
    dims = list(fields)
    methods = [str(m) for m in ds.estimator.values]
    images = []
    sampled = "sampled" in methods and "nngp" in methods
    for dim in (d for d in dims if ds.sizes[d] > 1):
        if not set(fields[dim]) <= {"seed", "data.seed"}:  # replicates are averaged, not plotted
            images.append(_sweep_figure(ds, dim, fields[dim][0], figures / f"cka_vs_{dim}.png"))
        if fields[dim] == ["network.width"] and "nngp" in methods:  # width alone: fixed P
            images.append(_width_figure(ds, dim, figures / "delta_cka_vs_inv_width.png"))
    if sampled:
        images.append(_theory_vs_sampled(ds, figures / "theory_vs_sampled.png"))
        for dim in dims:
            if fields[dim][0] == "network.width" and ds.sizes[dim] > 1:
                images.append(_relative_miss_figure(ds, dim, figures / "relative_miss_vs_width.png"))
    counts = {s: int((ds.status.values == s).sum()) for s in ("ok", "failed", "missing")}
    flat = ds.stack(point=dims) if dims else ds
    header = "| " + " | ".join(dims) + " | " + " | ".join(f"CKA out: {m}" for m in methods) + " | status |"
    rows = []
    for j in range(flat.sizes["point"]):
        p = flat.isel(point=j)
        coords = [str(flat[d].values[j]) for d in dims]
        values = [f"{v:.4f}" for v in p.cka_out.values]
        rows.append("| " + " | ".join(coords + values + [str(p.status.item())]) + " |")
    lines = [
        f"# Sweep {ds.attrs['name']}",
        "",
        f"Grid: {', '.join(f'{d} ({len(ds[d])})' for d in dims)}; points ok {counts['ok']}, "
        f"failed {counts['failed']}, missing {counts['missing']}.",
        "",
        "## CKA of the output kernel with YY^T (T16)",
        "",
        header,
        "|" + "---|" * (len(dims) + len(methods) + 1),
        *rows,
        "",
        *[f"![{p.stem}](figures/{p.name})" for p in images],
        "",
        *agreement_lines(
            (_point_label(flat, j, dims), flat.cka.isel(point=j), flat.cka_se.isel(point=j))
            for j in range(flat.sizes["point"])
        ),
        *[f"- failed: {e}" for e in np.unique(ds.error.values) if e],
    ]
    text = "\n".join(lines) + "\n"
    atomic_write(out / "report.md", text.encode())
    body = "".join(_html_line(line) for line in lines)
    atomic_write(out / "report.html", f"<!doctype html><html><body>{body}</body></html>\n".encode())


def _point_label(flat: xr.Dataset, j: int, dims: list[str]) -> str:
    return ", ".join(f"{d}={flat[d].values[j]}" for d in dims)


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
