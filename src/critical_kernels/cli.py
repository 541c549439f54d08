"""Command-line interface: `critical-kernels demo | run | sweep | report | criticality`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from . import plots
from .criticality import criticality as _criticality
from .errors import CriticalKernelsError
from .numerics import limit_blas_threads

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(width=None if sys.stdout.isatty() else 140)  # pipes and logs: no truncation


def _fail(message: str) -> None:
    """Bad input: one line on stderr, exit status 2, no traceback."""
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def criticality(
    activation: str = typer.Option("erf", help="erf, relu, linear, tanh or gelu"),
    g_b: float = typer.Option(0.0, "--g-b", help="bias variance"),
    g_w: float = typer.Option(None, "--g-w", help="weight variance (default: the critical g_c)"),
) -> None:
    """Fixed points, slopes chi and depth scales of the layer map; the critical g_c."""
    try:
        point = _criticality(activation, g_b=g_b, g_w=g_w)
    except CriticalKernelsError as err:
        _fail(str(err))
    table = Table(title=f"criticality: {point.activation}, g_b = {point.g_b:g}, g_w = {point.g_w:.6g}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    labels = {
        "g_c": "g_c (edge of chaos)",
        "q_star": "q*",
        "c_star": "c*",
        "rho_star": "rho* = c*/q*",
        "chi_1": "chi_1 = g<phi'^2>",
        "chi_c": "chi_c",
        "chi_q": "chi_q",
        "xi_q": "xi_q (depth scale)",
        "xi_c": "xi_c (depth scale)",
        "phase": "phase",
    }
    for key, label in labels.items():
        value = getattr(point, key)
        table.add_row(label, value if isinstance(value, str) else f"{value:.10g}")
    console.print(table)


def _demo_sweep(depth: int, width: int, g_b: float, kappa: float, seed: int) -> dict:
    """The demo as a sweep: digits 0 vs 3 (P = 100) and XOR (P = 60) at g_w = 1/2, 1, 2 x g_c."""
    return {
        "name": "demo",
        "seed": seed,
        "data": {"classes": [0, 3], "n_test": 100, "dim": 10, "seed": seed},
        "network": {"depth": depth, "width": width, "activation": "erf", "g_b": g_b, "kappa": kappa},
        "methods": {"perturbative": True, "map": True, "sampled": False},
        "sweep": {
            "data.task,data.n_train": [["digits", 100], ["xor", 60]],
            "network.g_w_over_g_c": [0.5, 1.0, 2.0],
        },
    }


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="output folder"),
    depth: int = typer.Option(4, help="number of hidden layers L"),
    width: int = typer.Option(100, help="hidden width N of the finite network"),
    g_b: float = typer.Option(0.1, "--g-b", help="bias variance"),
    kappa: float = typer.Option(0.1, help="observation noise variance"),
    seed: int = typer.Option(0, help="data split and Monte Carlo seed"),
) -> None:
    """Main job on the embedded default data: CKA of every layer and test error for the NNGP, the
    first-order and the MAP kernels, below, at and above the edge of chaos.

    Writes OUT/cka.csv, OUT/sweep.nc, OUT/report.md|html, OUT/figures/ and a run folder (results.nc,
    kernel heat maps, report) per task at g_c."""
    from .experiments import load_point, load_sweep, run_sweep, write_run, write_sweep_report

    start = time.perf_counter()
    rows = []  # (task, g_w, g_w/g_c, chi_1, estimator, CKA per layer, test error)
    try:
        grid = load_sweep(_demo_sweep(depth, width, g_b, kappa, seed))
        with console.status("demo") as status:
            merged = run_sweep(
                grid,
                out,
                executor="serial",
                on_point=lambda point, state: status.update(f"{point.config.data.task}: {state}"),
            )
        write_sweep_report(out, merged)
        g_c = _criticality("erf", g_b=g_b).g_c
        for point in grid.points:
            ds = load_point(out, point.key)
            if ds is None:
                _fail(f"demo: {merged.error.values[point.index]}")
            ratio = point.config.network.g_w_over_g_c
            chi1 = _criticality("erf", g_b=g_b, g_w=ratio * g_c).chi_1
            converged = "" if ds.attrs["map_converged"] else " (unconverged)"
            labels = {"nngp": "NNGP", "perturbative": "first order", "map": f"MAP {ds.attrs['map_method']}"}
            for k, name in enumerate(str(e) for e in ds.estimator.values):
                label = labels[name] + (converged if name == "map" else "")
                rows.append(
                    (
                        ds.attrs["data"],
                        ratio * g_c,
                        ratio,
                        chi1,
                        label,
                        ds.cka.values[k],
                        ds.test_error.values[k],
                    )
                )
            if ratio == 1.0:
                write_run(ds, point.config, out / f"{point.config.data.task}_at_g_c")
    except CriticalKernelsError as err:
        _fail(str(err))
    title = f"CKA per layer, erf, L = {depth}, g_b = {g_b}, kappa = {kappa} (g_c = {g_c:.4f})"
    caption = f"first order (T13) and MAP (T8-T12) at width N = {width}; test error of the kernel predictor"
    table = Table(title=title, box=box.SIMPLE, padding=(0, 1), caption=caption)
    for name in ("task", "estimator"):
        table.add_column(name, no_wrap=True)
    for name in ("g/g_c", "chi_1", *[f"C{l}" for l in range(depth + 1)], "test err"):
        table.add_column(name, justify="right", no_wrap=True)
    for name, _, ratio, chi1, method, ckas, error in rows:
        cells = [f"{ratio:.2f}", f"{chi1:.3f}", *[f"{c:.4f}" for c in ckas], f"{error:.3f}"]
        table.add_row(name, method, *cells)
    console.print(table)
    header = "task,estimator,g_w,g_w_over_g_c,chi_1," + ",".join(f"cka_{l}" for l in range(depth + 1))
    lines = [header + ",test_error"]
    lines += [
        f"{n},{m},{g:.6g},{r:.6g},{c:.6g}," + ",".join(f"{v:.6g}" for v in k) + f",{e:.6g}"
        for n, g, r, c, m, k, e in rows
    ]
    (out / "cka.csv").write_text("\n".join(lines) + "\n")
    plots.cka_per_layer(
        [(n, r, m, k) for n, _, r, _, m, k, _ in rows], out / "figures" / "cka_per_layer.png", title=title
    )
    console.print(f"wrote {out}: cka.csv, sweep.nc, report.md, figures/, and a run folder per task at g_c")
    console.print(f"done in {time.perf_counter() - start:.1f} s")


@app.command("run")
def run_command(
    config: Path = typer.Argument(..., help="experiment config (TOML)"),
    set_: list[str] = typer.Option([], "--set", help="override, e.g. --set network.width=200"),
    out: Path = typer.Option(None, help="run folder (default runs/NAME)"),
) -> None:
    """One experiment: NNGP, first-order, MAP and sampled kernels of every layer; writes a run folder."""
    from .experiments import load_config, run, write_run

    try:
        cfg = load_config(config, set_)
        with console.status("running") as status:
            ds = run(cfg, status=lambda message: status.update(message))
        folder = write_run(ds, cfg, out or Path("runs") / cfg.name)
    except CriticalKernelsError as err:
        _fail(str(err))
    table = Table(title=f"{cfg.name}: CKA per layer and test error", box=box.SIMPLE)
    table.add_column("estimator", no_wrap=True)
    for l in ds.layer.values:
        table.add_column(f"C{l}", justify="right")
    table.add_column("test err", justify="right")
    for m, ckas, errs, test in zip(
        ds.estimator.values, ds.cka.values, ds.cka_se.values, ds.test_error.values, strict=True
    ):
        cells = [f"{c:.4f}" + (f"±{e:.4f}" if e > 0 else "") for c, e in zip(ckas, errs, strict=True)]
        table.add_row(str(m), *cells, f"{test:.3f}")
    console.print(table)
    if "map_converged" in ds.attrs:
        console.print(
            f"MAP: {ds.attrs['map_method']}, converged={bool(ds.attrs['map_converged'])}, "
            f"{ds.attrs['map_n_iter']} sweeps, residual {ds.attrs['map_residual']:.1e}"
        )
    console.print(f"wrote {folder}")


@app.command()
def sweep(
    config: Path = typer.Argument(..., help="experiment config (TOML) with a [sweep] table of lists"),
    set_: list[str] = typer.Option([], "--set", help="override, e.g. --set methods.sampled=false"),
    out: Path = typer.Option(None, help="sweep folder (default runs/NAME)"),
    resume: bool = typer.Option(False, help="skip points already finished in the folder"),
    workers: int = typer.Option(1, help="worker processes, one core each"),
    executor: str = typer.Option("local", help="local (processes), dask or serial (in this process)"),
    scheduler: str = typer.Option(None, help="address of a running Dask scheduler (implies dask)"),
) -> None:
    """A grid of experiments: each finished point cached, failed points recorded, results merged."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .experiments import load_sweep, run_sweep, write_sweep_report

    try:
        grid = load_sweep(config, set_)
        folder = out or Path("runs") / grid.name
        counts = {"cached": 0, "ok": 0, "failed": 0}
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("points", total=len(grid.points))

            def on_point(point, status):
                counts[status] += 1
                bar.update(task, advance=1, description=", ".join(f"{k} {v}" for k, v in counts.items()))

            ds = run_sweep(
                grid,
                folder,
                resume=resume,
                executor=executor,
                workers=workers,
                scheduler=scheduler,
                on_point=on_point,
            )
        write_sweep_report(folder, ds)
    except CriticalKernelsError as err:
        _fail(str(err))
    shape = " x ".join(f"{d} {n}" for d, n in zip(ds.status.dims, ds.status.shape, strict=True))
    console.print(
        f"{len(grid.points)} points ({shape}): {counts['ok']} computed, {counts['cached']} cached, "
        f"{counts['failed']} failed"
    )
    for message in sorted({e for e in ds.error.values.ravel() if e}):
        console.print(f"[red]failed:[/] {message}", highlight=False)
    console.print(f"wrote {folder / 'sweep.nc'}, {folder / 'report.md'} and figures")
    if counts["failed"]:
        raise typer.Exit(1)


@app.command()
def report(
    folder: Path = typer.Argument(..., help="a run folder (results.nc) or sweep folder (sweep.nc)"),
) -> None:
    """Rebuild figures, report.md and report.html from a run or sweep folder."""
    from .experiments import load_results, load_sweep_results, write_report, write_sweep_report

    try:
        if (folder / "sweep.nc").exists():
            write_sweep_report(folder, load_sweep_results(folder))
        else:
            write_report(folder, load_results(folder))
    except CriticalKernelsError as err:
        _fail(str(err))
    console.print(f"wrote {folder / 'report.md'}, {folder / 'report.html'} and figures")


def main() -> None:
    """Console entry point: bad input exits 2 with one line, never a traceback."""
    try:
        limit_blas_threads(app)(standalone_mode=True)  # numerics.blas_threads: 1 unless overridden
    except CriticalKernelsError as err:  # pragma: no cover - commands catch their own
        Console(stderr=True).print(f"error: {err}")
        sys.exit(2)


if __name__ == "__main__":
    main()
