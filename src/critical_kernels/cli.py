"""Command-line interface: `critical-kernels demo | run | report | criticality`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from . import datasets, plots
from .criticality import criticality as _criticality
from .errors import CriticalKernelsError
from .map_solver import solve_map
from .metrics import cka_layers
from .perturbative import perturbative_kernels
from .predict import kernel_predict, test_error
from .spec import NetworkSpec

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


def _demo_tasks(seed: int):
    return [
        datasets.digits_binary((0, 3), n_train=100, n_test=100, seed=seed),
        datasets.xor(n_train=60, n_test=100, dim=10, seed=seed),
    ]


@app.command()
def demo(
    out: Path = typer.Option(None, help="folder for results: cka.csv and figures/cka_per_layer.png"),
    depth: int = typer.Option(4, help="number of hidden layers L"),
    width: int = typer.Option(100, help="hidden width N of the finite network"),
    g_b: float = typer.Option(0.1, "--g-b", help="bias variance"),
    kappa: float = typer.Option(0.1, help="observation noise variance"),
    seed: int = typer.Option(0, help="data split and Monte Carlo seed"),
) -> None:
    """Main job on the embedded default data: CKA of every layer and test error for the NNGP, the
    first-order and the MAP kernels, below, at and above the edge of chaos."""
    start = time.perf_counter()
    rows = []  # (task, g_w, g_w/g_c, chi_1, kernel, CKA per layer, test error)
    try:
        g_c = _criticality("erf", g_b=g_b).g_c
        for data in _demo_tasks(seed):
            for ratio in (0.5, 1.0, 2.0):
                spec = NetworkSpec(
                    depth=depth, width=width, activation="erf", g_w=ratio * g_c, g_b=g_b, kappa=kappa
                )
                chi1 = _criticality("erf", g_b=g_b, g_w=spec.gains[0]).chi_1
                pert = perturbative_kernels(spec, data.X, data.Y, data.X_test, key=seed)
                solved = solve_map(spec, data.X, data.Y, data.X_test, key=seed, throw=False)
                head = (data.name, spec.gains[0], ratio, chi1)
                for label, kernels in (
                    ("NNGP", pert.nngp),
                    ("first order", pert.kernels),
                    (f"MAP {solved.method}" + ("" if solved.converged else " (unconverged)"), solved.kernels),
                ):
                    error = test_error(kernel_predict(kernels[-1], data.Y, kappa), data.Y_test)["class_error"]
                    rows.append((*head, label, cka_layers(kernels, data.Y), error))
    except CriticalKernelsError as err:
        _fail(str(err))
    title = f"CKA per layer, erf, L = {depth}, g_b = {g_b}, kappa = {kappa} (g_c = {g_c:.4f})"
    caption = f"first order (T13) and MAP (T8-T12) at width N = {width}; test error of the kernel predictor"
    table = Table(title=title, box=box.SIMPLE, padding=(0, 1), caption=caption)
    for name in ("task", "kernel"):
        table.add_column(name, no_wrap=True)
    for name in ("g/g_c", "chi_1", *[f"C{l}" for l in range(depth + 1)], "test err"):
        table.add_column(name, justify="right", no_wrap=True)
    for name, _, ratio, chi1, method, ckas, error in rows:
        cells = [f"{ratio:.2f}", f"{chi1:.3f}", *[f"{c:.4f}" for c in ckas], f"{error:.3f}"]
        table.add_row(name, method, *cells)
    console.print(table)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        header = "task,kernel,g_w,g_w_over_g_c,chi_1," + ",".join(f"cka_{l}" for l in range(depth + 1))
        lines = [header + ",test_error"]
        lines += [
            f"{n},{m},{g:.6g},{r:.6g},{c:.6g}," + ",".join(f"{v:.6g}" for v in k) + f",{e:.6g}"
            for n, g, r, c, m, k, e in rows
        ]
        (out / "cka.csv").write_text("\n".join(lines) + "\n")
        figure = plots.cka_per_layer(
            [(n, r, m, k) for n, _, r, _, m, k, _ in rows], out / "figures" / "cka_per_layer.png", title=title
        )
        console.print(f"wrote {out / 'cka.csv'} and {figure}")
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
    table.add_column("kernel", no_wrap=True)
    for l in ds.layer.values:
        table.add_column(f"C{l}", justify="right")
    table.add_column("test err", justify="right")
    for m, ckas, errs, test in zip(
        ds.method.values, ds.cka.values, ds.cka_se.values, ds.test_error.values, strict=True
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
def report(folder: Path = typer.Argument(..., help="a run folder with results.nc")) -> None:
    """Rebuild figures, report.md and report.html from a run folder."""
    from .experiments import load_results, write_report

    try:
        write_report(folder, load_results(folder))
    except CriticalKernelsError as err:
        _fail(str(err))
    console.print(f"wrote {folder / 'report.md'}, {folder / 'report.html'} and figures")


def main() -> None:
    """Console entry point: bad input exits 2 with one line, never a traceback."""
    try:
        app(standalone_mode=True)
    except CriticalKernelsError as err:  # pragma: no cover - commands catch their own
        Console(stderr=True).print(f"error: {err}")
        sys.exit(2)


if __name__ == "__main__":
    main()
