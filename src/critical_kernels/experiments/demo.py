"""The demo: digits 0 vs 3 and XOR below, at and above the edge of chaos, run as a sweep; then
cka.csv (every CKA with its SE), a CKA-per-layer figure and a run folder per task at g_c."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import plots
from ..critical_point import criticality
from .io import output_folder
from .labels import estimator_label, fmt_se, layer_kernel
from .report import run_warnings, write_run
from .sweep import Serial, Sweep, load_point, load_sweep, load_sweep_results, run_sweep
from .sweep_report import write_sweep_report


class DemoSettings(NamedTuple):
    """The demo's network and seed (the CLI options)."""

    depth: int = 4
    width: int = 100
    g_b: float = 0.1
    kappa: float = 0.1
    seed: int = 0


class Row(NamedTuple):
    """One line of cka.csv: a task, gain and estimator, its CKA per layer, test error and CKA SEs."""

    task: str
    g_w: float
    ratio: float
    chi_1: float
    label: str
    cka: np.ndarray
    test_error: float
    cka_se: np.ndarray


class Demo(NamedTuple):
    """What the demo computed: its rows, the warnings of its runs, g_c and the run folders written."""

    rows: list[Row]
    notes: set[str]
    g_c: float
    runs: list[str]


class DemoFailed(RuntimeError):
    """A demo point failed: the folder is kept (finished points stay cached for --resume)."""


def demo_sweep(s: DemoSettings) -> dict:
    """The demo as a sweep: digits 0 vs 3 (P = 100) and XOR (P = 60) at g_w = 1/2, 1, 2 x g_c."""
    return {
        "name": "demo",
        "seed": s.seed,
        "data": {"classes": [0, 3], "n_test": 100, "dim": 10, "seed": s.seed},
        "network": {"depth": s.depth, "width": s.width, "activation": "erf", "g_b": s.g_b, "kappa": s.kappa},
        # a quick look: a fixed 4096 samples (CKA SE ~ 2-5 % of the adaptation, shown as ±), not rtol
        "methods": {
            "perturbative": True,
            "map": True,
            "sampled": False,
            **{table: {"rtol": 0} for table in ("monte_carlo", "importance", "cumulant")},
        },
        "sweep": {
            "data.task,data.n_train": [["digits", 100], ["xor", 60]],
            "network.g_w_over_g_c": [0.5, 1.0, 2.0],
        },
    }


def run_demo(
    out: Path,
    s: DemoSettings,
    *,
    resume: bool = False,
    force: bool = False,
    on_point: Callable = lambda point, state: None,
) -> Demo:
    """Run the demo into `out` (a demo folder): the sweep and its report, cka.csv, the CKA-per-layer
    figure of every task and gain, a run folder per task at g_c. DemoFailed if a point failed."""
    grid = load_sweep(demo_sweep(s))
    g_c = criticality("erf", g_b=s.g_b).g_c
    with output_folder(out, "demo", force=force, resume=resume):
        merged = run_sweep(grid, out, resume=resume, executor=Serial(), on_point=on_point)
        rows, notes = _collect(out, grid, merged, s, g_c)
        write_csv(out / "cka.csv", rows, s.depth)
        title = (
            f"CKA per layer: erf, $L = {s.depth}$, $N = {s.width}$, $g_b = {s.g_b:g}$, "
            f"$\\kappa = {s.kappa:g}$, $g_c = {g_c:.4f}$"
        )
        plots.cka_per_layer(
            [(r.task, r.ratio, r.label, r.cka, r.cka_se) for r in rows],
            out / "figures" / "cka_per_layer.png",
            title=title,
        )
        write_demo_report(out, merged)
    runs = sorted({p.config.data.task + "_at_g_c" for p in grid.points})
    return Demo(rows, notes, g_c, runs)


def _collect(out: Path, grid: Sweep, merged, s: DemoSettings, g_c: float) -> tuple[list[Row], set[str]]:
    """The rows and run warnings of every point, chi_1 of its gain; the run folders at g_c."""
    rows, notes = [], set()
    for point in grid.points:
        ds = load_point(out, point.key)
        if ds is None:
            raise DemoFailed(f"demo: {merged.error.values[point.index]}")
        ratio = point.config.network.g_w_over_g_c
        assert ratio is not None  # every demo point sets g_w as a multiple of g_c
        chi1 = criticality("erf", g_b=s.g_b, g_w=ratio * g_c).chi_1
        where = f"{ds.attrs['data']}, g_w = {ratio:g} g_c"
        notes.update(f"{where}: {line}" for line in run_warnings(ds.attrs))
        for k, name in enumerate(str(e) for e in ds.estimator.values):
            label = estimator_label(name, ds.attrs)
            cka, error, se = ds.cka.values[k], ds.test_error.values[k], ds.cka_se.values[k]
            rows.append(Row(ds.attrs["data"], ratio * g_c, ratio, chi1, label, cka, error, se))
        if ratio == 1.0:
            name = f"demo: {ds.attrs['data']} at g_c"  # the run report's title
            named = point.config.model_copy(update={"name": name})
            write_run(ds.assign_attrs(name=name), named, out / f"{point.config.data.task}_at_g_c")
    return rows, notes


def write_csv(path: Path, rows: list[Row], depth: int) -> None:
    """cka.csv: task, estimator, g_w, g_w/g_c, chi_1, CKA per layer, test error, CKA SE per layer
    (six significant digits)."""
    layers = range(depth + 1)
    header = "task,estimator,g_w,g_w_over_g_c,chi_1," + ",".join(f"cka_{l}" for l in layers)
    lines = [header + ",test_error," + ",".join(f"cka_se_{l}" for l in layers)]
    lines += [
        f"{r.task},{r.label},{r.g_w:.6g},{r.ratio:.6g},{r.chi_1:.6g},"
        + ",".join(f"{v:.6g}" for v in r.cka)
        + f",{r.test_error:.6g},"
        + ",".join(f"{v:.6g}" for v in r.cka_se)
        for r in rows
    ]
    path.write_text("\n".join(lines) + "\n")


def write_demo_report(out: Path, merged=None) -> None:
    """The sweep report of a demo folder with the demo's own section first: every layer's CKA ± SE
    per task and gain (from cka.csv), the per-layer figure and links to the run folders at g_c."""
    out = Path(out)
    merged = load_sweep_results(out) if merged is None else merged
    with open(out / "cka.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    layers = [int(name[len("cka_se_") :]) for name in rows[0] if name.startswith("cka_se_")]
    lines = ["## CKA with YYᵀ in every layer", ""]
    header = "| g_w/g_c | χ₁ | estimator | " + " | ".join(map(layer_kernel, layers)) + " | test error |"
    for task in dict.fromkeys(row["task"] for row in rows):
        lines += [f"### {task}", "", header, "|" + "---|" * (len(layers) + 4)]
        for row in (row for row in rows if row["task"] == task):
            cells = [fmt_se(float(row[f"cka_{l}"]), float(row[f"cka_se_{l}"])) for l in layers]
            numbers = f"{float(row['g_w_over_g_c']):g} | {float(row['chi_1']):.3f}"
            lines.append(
                f"| {numbers} | {row['estimator']} | {' | '.join(cells)} | {float(row['test_error']):.3f} |"
            )
        lines.append("")
    runs = sorted(p.name for p in out.glob("*_at_g_c") if (p / "report.html").exists())
    lines += [
        "Error bars: the Monte Carlo SE of each estimate (none where the estimator is exact).",
        "",
        "![CKA per layer](figures/cka_per_layer.png)",
        "",
        "Each task at the edge of chaos, with its kernels and diagnostics: "
        + ", ".join(f"[{name.replace('_at_g_c', ' at g_c')}]({name}/report.html)" for name in runs),
        "",
    ]
    write_sweep_report(out, merged, preface=lines)
