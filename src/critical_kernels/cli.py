"""Command-line interface: `critical-kernels demo | run | sweep | report | criticality`."""

from __future__ import annotations

import math
import os
import shlex
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import numpy as np
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from . import __version__, progress
from .critical_point import criticality as _criticality
from .errors import CriticalKernelsError, EstimateWarning, InputError
from .experiments import (
    load_config,
    load_results,
    load_sweep,
    load_sweep_results,
    run,
    run_sweep,
    write_report,
    write_run,
    write_sweep_report,
)
from .experiments.demo import DemoFailed, DemoSettings, demo_sweep, run_demo, write_demo_report
from .experiments.io import folder_kind, output_folder
from .experiments.labels import (
    approximated,
    estimator_label,
    failed,
    fmt_se,
    references,
)
from .experiments.merge import unanswered
from .experiments.report import run_warnings
from .experiments.sweep import EXECUTORS, executor_named, ok_points, point_attrs
from .numerics import limit_blas_threads

try:  # typer >= 0.20 carries its own copy of click
    from typer._click.exceptions import ClickException, UsageError
    from typer.exceptions import Abort
except ImportError:  # pragma: no cover - older typer on click
    from click.exceptions import Abort, ClickException, UsageError

HELP = (
    "Kernels of finite-width Bayesian deep networks, layer by layer: the infinite-width NNGP, the "
    "first-order finite-width theory, the MAP kernels and networks sampled from the posterior, with "
    "the CKA of every layer with the task and the test error (Fischer et al., ICML 2024). "
    "Start with `critical-kernels demo`."
)


class _OneLineErrors(TyperGroup):
    """Usage errors (a bad option value, an unknown option, a missing argument) as one line on
    stderr with exit status 2, like every other bad input."""

    def main(  # pyright: ignore[reportIncompatibleMethodOverride]  (click's signature, keyword-compatible)
        self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra
    ):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except ClickException as err:
            hint = " (see --help)" if isinstance(err, UsageError) else ""
            _print_error(err.format_message().replace("\n", " ") + hint)
            sys.exit(2 if isinstance(err, UsageError) else err.exit_code)
        except Abort:
            _print_error("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


# click's plain help: options as `--force  text`, no "<bool>" on flags, no boxes to cut at 80 columns
app = typer.Typer(
    add_completion=False, no_args_is_help=True, help=HELP, cls=_OneLineErrors, rich_markup_mode=None
)


def _console() -> Console:
    """Terminals and COLUMNS as they are; pipes and logs 140 wide (no truncation)."""
    wide = sys.stdout.isatty() or "COLUMNS" in os.environ
    return Console(width=None if wide else 140)


def _print_error(message: str) -> None:
    """One line on stderr; the message is printed as it is (no rich markup: `[sweep]` stays)."""
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False)


def _warn(console: Console, message: str) -> None:
    console.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False)


def _fail(message: str) -> NoReturn:
    """Bad input: one line on stderr, exit status 2, no traceback."""
    _print_error(message)
    raise typer.Exit(2)


@contextmanager
def _bad_input():
    """Bad input and unwritable files as one line and exit status 2."""
    try:
        yield
    except CriticalKernelsError as err:
        _fail(str(err))
    except OSError as err:  # a file that cannot be written or read half-way through
        where = f"{err.filename}: " if err.filename else ""
        _fail(f"{where}{err.strerror or err}")


@contextmanager
def _interruptible(kept: Callable[[], str], resume: str):
    """Ctrl-C: one line with what is kept on disk (`kept()`) and the command that continues; exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        _print_error(f"interrupted: {kept()}; continue with: {resume}")
        raise typer.Exit(130) from None


def _points_kept(counts: dict, total: int, folder: Path) -> Callable[[], str]:
    """What an interrupted sweep or demo keeps: its finished points (cached or computed)."""
    return lambda: f"{counts['cached'] + counts['ok']} of {total} points kept in {folder}"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"critical-kernels {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """Kernels of finite-width Bayesian deep networks (see the commands below)."""
    warnings.simplefilter("ignore", EstimateWarning)  # shown as the run's own warning lines instead


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
    console = _console()
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


NO_ANSWER = 3  # `run`: the run folder is written, but an estimator asked for gave no answer
FORCE = typer.Option(False, "--force", help="write into an existing folder, replacing what is there")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="output folder"),
    depth: int = typer.Option(4, help="number of hidden layers L"),
    width: int = typer.Option(100, help="hidden width N of the finite network"),
    g_b: float = typer.Option(0.1, "--g-b", help="bias variance"),
    kappa: float = typer.Option(0.1, help="observation noise variance"),
    seed: int = typer.Option(0, help="data split and Monte Carlo seed"),
    resume: bool = typer.Option(False, "--resume", help="continue the demo in OUT, keeping finished points"),
    force: bool = FORCE,
) -> None:
    """Main job on the embedded default data: CKA of every layer and test error for the NNGP, the
    first-order and the MAP kernels, below, at and above the edge of chaos.

    Writes OUT/cka.csv, OUT/sweep.nc, OUT/report.md|html, OUT/figures/ and a run folder (results.nc,
    kernel heat maps, report) per task at g_c."""
    console = _console()
    start = time.perf_counter()
    settings = DemoSettings(depth, width, g_b, kappa, seed)
    total = len(load_sweep(demo_sweep(settings)).points)
    kept = {"cached": 0, "ok": 0}
    resume_line = (
        f"critical-kernels demo --out {shlex.quote(str(out))} --depth {depth} --width {width} "
        f"--g-b {g_b} --kappa {kappa} --seed {seed} --resume"
    )

    def on_point(point, state, status):
        kept[state] = kept.get(state, 0) + 1
        done = sum(kept.values())
        status.update(f"demo: {done} of {total} points ({point.config.data.task}: {state})")

    with _bad_input(), _interruptible(_points_kept(kept, total, out), resume_line):
        with console.status(f"demo: 0 of {total} points") as status:
            try:
                result = run_demo(
                    out, settings, resume=resume, force=force, on_point=lambda p, s: on_point(p, s, status)
                )
            except DemoFailed as err:
                _fail(str(err))
    console.print(
        f"CKA(C^(l), YY^T) per layer l, erf, L = {depth}, N = {width}, g_b = {g_b}, kappa = {kappa}, "
        f"g_c = {result.g_c:.4f}",
        highlight=False,
    )
    for table in _demo_tables(result.rows, depth):
        console.print(table)
    se_line = _se_summary(np.concatenate([r[-1] for r in result.rows]))
    console.print(
        "C0 is the input kernel; first order: T13, MAP: T8-T12; test err: the class error of the "
        f"posterior predictive mean (T21). {se_line}; per entry (cka_se_l) and full precision in cka.csv.",
        highlight=False,
    )
    for note in sorted(result.notes):
        _warn(console, note)
    console.print(f"report: {out / 'report.md'} and {out / 'report.html'}", highlight=False)
    console.print(
        f"wrote {out}: cka.csv, sweep.nc, figures/, and a run folder per task at g_c "
        f"({', '.join(result.runs)})",
        highlight=False,
    )
    console.print(f"done in {time.perf_counter() - start:.1f} s")


def _se_summary(se: np.ndarray) -> str:
    """An upper bound on the known SEs (rounded up to two significant digits) and how many are unknown."""
    known = se[np.isfinite(se)]
    largest = float(known.max()) if known.size else 0.0
    if largest > 0:
        scale = 10.0 ** (math.floor(math.log10(largest)) - 1)
        largest = math.ceil(largest / scale) * scale
    unknown = se.size - known.size
    text = f"Monte Carlo SE of every CKA above <= {largest:.2g}"
    return text + (f" ({unknown} unknown)" if unknown else "")


def _layers(chunk: list[int]) -> str:
    return f", layer {chunk[0]}" if len(chunk) == 1 else f", layers {chunk[0]}-{chunk[-1]}"


def _layer_tables(title: str, labels: list[str], cells: list[list[str]], tests: list[str], width: int):
    """Rows of per-layer cells in as many tables as it takes to fit `width` columns untruncated
    (consecutive layers in each, the test error with the last layers)."""
    depth = len(cells[0])
    label_width = max(len("estimator"), *map(len, labels))
    cell_width = max(3, *(len(c) for row in cells for c in row)) + 1
    test_width = max(len("test err"), *map(len, tests)) + 1
    fit = max(1, (width - label_width - test_width - 2) // cell_width)
    chunks = [list(range(i, min(i + fit, depth))) for i in range(0, depth, fit)]
    tables = []
    for chunk in chunks:
        part = "" if len(chunks) == 1 else _layers(chunk)
        table = Table(
            title=title + part, box=box.SIMPLE, padding=(0, 1), pad_edge=False, collapse_padding=True
        )
        table.add_column("estimator", no_wrap=True)
        for l in chunk:
            table.add_column(f"C{l}", justify="right", no_wrap=True)
        last = chunk[-1] == depth - 1
        if last:
            table.add_column("test err", justify="right", no_wrap=True)
        for label, row, test in zip(labels, cells, tests, strict=True):
            table.add_row(label, *(row[l] for l in chunk), *([test] if last else []))
        tables.append(table)
    return tables


def _demo_tables(rows, depth: int, per_table: int = 5) -> list[Table]:
    """The demo's numbers in tables that fit 80 columns: one per task (and per group of at most
    `per_table` layers when the network is deep), three decimals, chi_1 of each gain in the title."""
    tables = []
    layers = list(range(depth + 1))
    chunks = [layers[i : i + per_table] for i in range(0, len(layers), per_table)]
    for task in dict.fromkeys(r[0] for r in rows):
        chis = dict.fromkeys((ratio, chi1) for name, _, ratio, chi1, *_ in rows if name == task)
        chi_text = ", ".join(f"{chi1:.3f}" for _, chi1 in chis)
        ratios = ", ".join(f"{ratio:g}" for ratio, _ in chis)
        for chunk in chunks:
            part = "" if len(chunks) == 1 else _layers(chunk)
            title = f"{task}{part}: chi_1 = {chi_text} at g/g_c = {ratios}"
            table = Table(
                title=title,
                box=box.SIMPLE,
                padding=(0, 1),
                pad_edge=False,
                collapse_padding=True,
                title_justify="left",
            )
            table.add_column("g/g_c", justify="right", no_wrap=True)
            table.add_column("estimator", no_wrap=True)
            for l in chunk:
                table.add_column(f"C{l}", justify="right", no_wrap=True)
            last = chunk[-1] == layers[-1]
            if last:
                table.add_column("test err", justify="right", no_wrap=True)
            previous = None
            for name, _, ratio, _, method, ckas, error, _ in rows:
                if name != task:
                    continue
                cells = [f"{ratio:g}" if ratio != previous else "", method]
                previous = ratio
                cells += [f"{ckas[l]:.3f}" if np.isfinite(ckas[l]) else "NaN" for l in chunk]
                if last:
                    cells.append(f"{error:.3f}" if np.isfinite(error) else "NaN")
                table.add_row(*cells, end_section=False)
            tables.append(table)
    return tables


def _run_into(folder: Path, cfg, console, *, force: bool, resume: bool, resume_line: str):
    """Run `cfg` into a run folder, the sampled chains checkpointed in folder/checkpoints until the
    folder is written (then removed); Ctrl-C names them and the command that continues."""
    checkpoints = folder / "checkpoints"

    def kept() -> str:
        return f"{len(list(checkpoints.glob('*.chains')))} sampled-chain checkpoint(s) in {checkpoints}"

    if resume and not force and (folder / "results.nc").is_file() and not checkpoints.is_dir():
        raise InputError(f"--resume: {folder} holds a finished run; pass --force to compute it again")
    with output_folder(folder, "run", force=force, resume=resume), _interruptible(kept, resume_line):
        if force and not resume:
            shutil.rmtree(checkpoints, ignore_errors=True)
        checkpoints.mkdir(exist_ok=True)
        with console.status("running") as status, progress.to_status(status.update):
            ds = run(cfg, status=status.update, checkpoints=checkpoints)
        write_run(ds, cfg, folder)
        shutil.rmtree(checkpoints)
    return ds


@app.command("run")
def run_command(
    config: Path = typer.Argument(..., help="experiment config (TOML)"),
    set_: list[str] = typer.Option([], "--set", help="override, e.g. --set network.width=200"),
    out: Path = typer.Option(None, help="run folder (default runs/NAME)"),
    force: bool = FORCE,
    resume: bool = typer.Option(
        False, "--resume", help="continue a killed run: its sampled chains go on from their checkpoint"
    ),
) -> None:
    """One experiment: NNGP, first-order, MAP and sampled kernels of every layer; writes a run folder."""
    console = _console()
    with _bad_input():
        cfg = load_config(config, set_)
        folder = Path(out) if out is not None else Path("runs") / cfg.name
        overrides = "".join(f" --set {shlex.quote(s)}" for s in set_)
        paths = f"{shlex.quote(str(config))}{overrides} --out {shlex.quote(str(folder))}"
        resume_line = f"critical-kernels run {paths} --resume"
        ds = _run_into(folder, cfg, console, force=force, resume=resume, resume_line=resume_line)
    labels = [estimator_label(str(m), ds.attrs) for m in ds.estimator.values]
    cells = [
        [fmt_se(c, e) for c, e in zip(ckas, errs, strict=True)]
        for ckas, errs in zip(ds.cka.values, ds.cka_se.values, strict=True)
    ]
    tests = [f"{t:.3f}" if np.isfinite(t) else "NaN" for t in ds.test_error.values]
    for table in _layer_tables(
        f"{cfg.name}: CKA(C^(l), YY^T) per layer l", labels, cells, tests, console.width
    ):
        console.print(table)
    if "map_result" in ds.attrs:
        a = ds.attrs
        console.print(
            f"MAP: {a['map_method']}, result {a['map_result']}, {a['map_n_iter']} sweeps, "
            f"residual {a['map_residual']:.1e}",
            highlight=False,
        )
    for note in run_warnings(ds.attrs):
        _warn(console, note)
    console.print(f"wrote {folder} (report: {folder / 'report.html'})", highlight=False)
    missing = unanswered(ds)
    if missing:
        _print_error(
            f"no answer from: {', '.join(missing)} (see the warnings above); exit status {NO_ANSWER}"
        )
        raise typer.Exit(NO_ANSWER)


@app.command()
def sweep(
    config: Path = typer.Argument(..., help="experiment config (TOML) with a [sweep] table of lists"),
    set_: list[str] = typer.Option([], "--set", help="override, e.g. --set methods.sampled=false"),
    out: Path = typer.Option(None, help="sweep folder (default runs/NAME)"),
    resume: bool = typer.Option(False, "--resume", help="continue the sweep in OUT, keeping finished points"),
    force: bool = typer.Option(False, "--force", help="recompute every point in an existing sweep folder"),
    workers: int = typer.Option(1, help="worker processes, one core each"),
    executor: str = typer.Option(
        "local", help=f"{' | '.join(EXECUTORS)}: worker processes, Dask or this process"
    ),
    scheduler: str = typer.Option(None, help="address of a running Dask scheduler (implies dask)"),
    kernels: bool = typer.Option(
        True, "--kernels/--no-kernels", help="store each point's kernel matrices (O(L P'^2) per point)"
    ),
) -> None:
    """A grid of experiments: each finished point cached, failed points recorded, results merged."""
    console = _console()
    counts = {"cached": 0, "ok": 0, "failed": 0}
    with _bad_input():
        chosen = executor_named(executor, workers, scheduler)
        grid = load_sweep(config, set_)
        folder = Path(out) if out is not None else Path("runs") / grid.name
        overrides = "".join(f" --set {shlex.quote(s)}" for s in set_)
        paths = f"{shlex.quote(str(config))}{overrides} --out {shlex.quote(str(folder))}"
        resume_line = f"critical-kernels sweep {paths} --resume"
        with output_folder(folder, "sweep", force=force, resume=resume):
            with _interruptible(_points_kept(counts, len(grid.points), folder), resume_line):
                options = dict(resume=resume, executor=chosen, kernels=kernels)
                ds = _sweep_with_progress(console, grid, folder, counts, options)  # writes the report too
    _sweep_summary(console, ds, len(grid.points), counts)
    console.print(f"wrote {folder / 'sweep.nc'}, {folder / 'report.md'} and figures", highlight=False)
    if counts["failed"]:
        raise typer.Exit(1)


def _sweep_with_progress(console: Console, grid, folder: Path, counts: dict, options: dict):
    """run_sweep with a progress bar that counts cached, computed and failed points."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("points", total=len(grid.points))

        def on_point(point, status):
            counts[status] += 1
            bar.update(task, advance=1, description=", ".join(f"{k} {v}" for k, v in counts.items()))

        return run_sweep(grid, folder, on_point=on_point, **options)


def _sweep_summary(console: Console, ds, n_points: int, counts: dict) -> None:
    """The point counts, failed sampled references, MAPs from the second cumulant, failed points."""
    shape = " x ".join(f"{d} {n}" for d, n in zip(ds.status.dims, ds.status.shape, strict=True))
    console.print(
        f"{n_points} points ({shape}): {counts['ok']} computed, {counts['cached']} cached, "
        f"{counts['failed']} failed",
        highlight=False,
    )
    points = [point_attrs(ds, where) for where in ok_points(ds)]
    for name in references(ds.estimator.values):
        count = sum(failed(p, name) for p in points)
        if count:
            _warn(
                console, f"{estimator_label(name)} failed its diagnostics at {count} point(s); see report.md"
            )
    for name in (str(m) for m in ds.estimator.values):
        count = sum(approximated(p, name) for p in points)
        if count:
            _warn(
                console, f"the {estimator_label(name)} kernels of {count} point(s) come from an approximation"
            )
    pairs = zip(ds.status.values.ravel(), ds.error.values.ravel(), strict=True)
    for status, message in sorted({(s, e) for s, e in pairs if e}):
        style = "red" if status == "failed" else "yellow"
        console.print(f"[{style}]{status}:[/] {escape(message)}", highlight=False, soft_wrap=True)


@app.command()
def report(
    folder: Path = typer.Argument(..., help="a run folder (results.nc) or sweep folder (sweep.nc)"),
) -> None:
    """Rebuild figures, report.md and report.html from a run or sweep folder."""
    with _bad_input():
        if not folder.is_dir():
            raise CriticalKernelsError(f"DIR: {folder} is not a folder; give a run or sweep folder")
        kind = folder_kind(folder)
        if kind == "demo":
            write_demo_report(folder)
        elif kind == "sweep" or (folder / "sweep.nc").exists():
            write_sweep_report(folder, load_sweep_results(folder))
        else:
            write_report(folder, load_results(folder))
    _console().print(f"wrote {folder / 'report.md'}, {folder / 'report.html'} and figures", highlight=False)


def main() -> None:
    """Console entry point: bad input exits 2 with one line, never a traceback."""
    try:
        limit_blas_threads(app)(standalone_mode=True)  # numerics.blas_threads: 1 unless overridden
    except CriticalKernelsError as err:  # pragma: no cover - commands catch their own
        _print_error(str(err))
        sys.exit(2)


if __name__ == "__main__":
    main()
