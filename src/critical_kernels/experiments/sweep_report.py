"""The report of a sweep folder: report.md and report.html from its merged Dataset."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from ..estimators.registry import REGISTRY
from .figures import sweep_figures, zipped_coordinate
from .labels import (
    approximated,
    estimator_label,
    failed,
    field_label,
    fmt_number,
    fmt_se,
    reference_failed,
    references,
    se_caption,
    shared,
)
from .merge import ANSWERED, point_attrs
from .report import agreement_lines, versions_line, write_markdown


def write_sweep_report(out: Path, ds: xr.Dataset, preface: Sequence[str] = ()) -> None:
    """Sweep figures (CKA and adaptation against every swept parameter, ΔCKA against 1/N, theory
    against sampled) and report.md / report.html from a merged sweep Dataset: per point the swept
    values, the g_w used, the output CKA ± SE of every estimator (flagged where the MAP used the
    second cumulant or the sampled networks failed their diagnostics), and the status; `preface`:
    markdown lines shown first (the demo's own section)."""
    out = Path(out)
    fields = json.loads(ds.attrs["fields"])
    dims = list(fields)
    images = sweep_figures(ds, out / "figures")
    counts = {s: int((ds.status.values == s).sum()) for s in ("ok", "partial", "failed", "missing")}
    flat = ds.stack(point=dims)
    points = [point_attrs(flat, {"point": j}) for j in range(flat.sizes["point"])]
    ok = [j for j, s in enumerate(flat.status.values) if s in ANSWERED]
    lines = [
        f"# Sweep {ds.attrs['name']}",
        "",
        f"Grid: {', '.join(f'{field_label(fields[d][0], math=False)} ({ds.sizes[d]})' for d in dims)}; "
        f"points ok {counts['ok']}, partial (an estimator without an answer) {counts['partial']}, "
        f"failed {counts['failed']}, missing {counts['missing']}.",
        "",
        *[note + "\n" for note in _notes(ds, [points[j] for j in ok])],
        *preface,
        "## CKA of the output kernel with YYᵀ (T16)",
        "",
        se_caption(shared([points[j] for j in ok]), [str(m) for m in ds.estimator.values]),
        "",
        *_point_table(ds, flat, points, ok),
        "",
        *[f"![{p.stem}](figures/{p.name})\n" for p in images],
        "",
        *agreement_lines(
            (
                _point_label(flat, j, dims),
                flat.cka.isel(point=j),
                flat.cka_se.isel(point=j),
                not reference_failed(points[j]),
            )
            for j in ok
        ),
        *[f"- failed: {e}" for e in np.unique(ds.error.values) if e],
        "",
        *_configuration_lines(out),
        "",
        "## Versions",
        "",
        versions_line(ds.attrs),
    ]
    write_markdown(out, lines)


def _point_table(ds: xr.Dataset, flat: xr.Dataset, points: list[dict], ok: list[int]) -> list[str]:
    """One row per point: the swept values, the g_w used, the output CKA ± SE of every estimator
    (flagged per point where the column header cannot say it for all), the status."""
    fields = json.loads(ds.attrs["fields"])
    estimators = [str(m) for m in ds.estimator.values]
    columns = [
        (f, d if j == 0 else zipped_coordinate(ds, d, f)) for d in fields for j, f in enumerate(fields[d])
    ]
    columns = [(f, name) for f, name in columns if name in flat.coords]
    common = shared([points[j] for j in ok])
    headers = [field_label(f, math=False) for f, _ in columns] + ["g_w used"]
    headers += [f"CKA out: {estimator_label(m, common, flag=False)}" for m in estimators] + ["status"]
    rows = []
    for j, attrs in enumerate(points):
        p = flat.isel(point=j)
        cells = [str(flat[name].values[j]) for _, name in columns]
        cells.append(fmt_number(float(p.g_w_used), 5) if "g_w_used" in p else "")
        for k, m in enumerate(estimators):
            cell = fmt_se(float(p.cka_out.values[k]), float(p.cka_out_se.values[k]))
            cells.append(cell + (_flag(m, attrs, common) if p.status.item() in ANSWERED else ""))
        cells.append(str(p.status.item()))
        rows.append("| " + " | ".join(cells) + " |")
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers), *rows]


def _flag(name: str, attrs: dict, common: dict) -> str:
    """What a point's cell adds to its column: a failed estimator (its failure word), an approximating
    method where the points used different methods (the column header names a shared one)."""
    record = REGISTRY.get(name)
    if record is not None and failed(attrs, name):
        return f" ({record.failure})"
    if approximated(attrs, name) and f"{name}_method" not in common:
        return f" ({attrs.get(f'{name}_method', 'approximation')})"
    return ""


def _notes(ds: xr.Dataset, points: list[dict]) -> list[str]:
    """Warnings over the finished points: failed references, kernels from an approximating method."""
    estimators = [str(m) for m in ds.estimator.values]
    notes = []
    for name in references(estimators):
        count = sum(failed(a, name) for a in points)
        if count:
            notes.append(
                f"> **Warning:** {estimator_label(name, shared(points), flag=False)} failed its diagnostics "
                f"at {count} point(s) ({REGISTRY[name].failure}); it is no reference there."
            )
    for name in estimators:
        count = sum(approximated(a, name) for a in points)
        if count:
            notes.append(
                f"> **Note:** the {REGISTRY[name].label} kernels of {count} point(s) come from an "
                "approximation (see the method in brackets)."
            )
    return notes


def _configuration_lines(out: Path) -> list[str]:
    text = (out / "sweep.toml").read_text() if (out / "sweep.toml").is_file() else ""
    resolved = ["The sweep as resolved (`sweep.toml`):", "", "```toml", text.rstrip(), "```"] if text else []
    return ["## Configuration", "", *resolved]


def _point_label(flat: xr.Dataset, j: int, dims: list[str]) -> str:
    return ", ".join(f"{d}={flat[d].values[j]}" for d in dims)
