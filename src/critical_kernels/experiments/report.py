"""Reports of run and sweep folders: report.md and report.html (tables rendered by markdown-it-py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr
from markdown_it import MarkdownIt

from .figures import run_figures, sweep_figures
from .io import _plain, atomic_write


def write_report(out: Path, ds: xr.Dataset) -> None:
    """Figures and report.md / report.html from a results Dataset."""
    out = Path(out)
    run_figures(ds, out / "figures")
    estimators = [str(m) for m in ds.estimator.values]
    P = int(ds.attrs["n_train"])
    cka, errors = ds.cka.values, ds.test_error.values  # rows follow `estimators`
    rows = [
        f"| {m} | " + " | ".join(f"{c:.4f}" for c in cka[i]) + f" | {errors[i]:.3f} |"
        for i, m in enumerate(estimators)
    ]
    header = "| estimator | " + " | ".join(f"C{l}" for l in ds.layer.values) + " | test error |"
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
    write_markdown(out, lines)


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


_STYLE = (
    "<style>body{font-family:sans-serif;max-width:60em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:720px}</style>"
)


def write_markdown(out: Path, lines: list[str]) -> None:
    """report.md and, rendered from it with real tables, report.html."""
    text = "\n".join(lines) + "\n"
    atomic_write(out / "report.md", text.encode())
    body = MarkdownIt("commonmark").enable("table").render(text)
    page = f"<!doctype html><html><head><meta charset='utf-8'>{_STYLE}</head><body>{body}</body></html>\n"
    atomic_write(out / "report.html", page.encode())


def write_sweep_report(out: Path, ds: xr.Dataset) -> None:
    """Sweep figures (CKA and adaptation against every swept parameter, ΔCKA against 1/N, theory
    against sampled) and report.md / report.html from a merged sweep Dataset."""
    out = Path(out)
    fields = json.loads(ds.attrs["fields"])
    dims = list(fields)
    estimators = [str(m) for m in ds.estimator.values]
    images = sweep_figures(ds, out / "figures")
    counts = {s: int((ds.status.values == s).sum()) for s in ("ok", "failed", "missing")}
    flat = ds.stack(point=dims) if dims else ds
    header = "| " + " | ".join(dims) + " | " + " | ".join(f"CKA out: {m}" for m in estimators) + " | status |"
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
        "|" + "---|" * (len(dims) + len(estimators) + 1),
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
    write_markdown(out, lines)


def _point_label(flat: xr.Dataset, j: int, dims: list[str]) -> str:
    return ", ".join(f"{d}={flat[d].values[j]}" for d in dims)
