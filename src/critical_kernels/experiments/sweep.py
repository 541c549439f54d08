"""Sweeps: a grid of experiments (grid.py) run by an executor (executors.py), each finished point
cached under the hash of its resolved config (cache.py), merged into one Dataset (merge.py).

    grid = load_sweep("examples/width_scan.toml")
    ds = run_sweep(grid, "runs/width_scan", executor=Local(workers=2), resume=True)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import tomli_w
import xarray as xr

from ..errors import InputError
from .cache import load_point, store, verified
from .executors import EXECUTORS, Dask, Executor, Local, PointResult, Serial, executor_named
from .grid import Axis, Point, Sweep, config_hash, load_sweep
from .io import atomic_write, check_kind, mark_folder
from .merge import load_sweep_results, merge, ok_points, point_attrs
from .sweep_report import write_sweep_report

__all__ = [
    "EXECUTORS",
    "Axis",
    "Dask",
    "Executor",
    "Local",
    "Point",
    "PointResult",
    "Serial",
    "Sweep",
    "config_hash",
    "executor_named",
    "load_point",
    "load_sweep",
    "load_sweep_results",
    "merge",
    "ok_points",
    "point_attrs",
    "run_sweep",
]


def run_sweep(
    sweep: Sweep,
    out: str | Path,
    *,
    executor: Executor | None = None,
    resume: bool = False,
    kernels: bool = True,
    on_point: Callable[[Point, str], None] = lambda point, status: None,
) -> xr.Dataset:
    """Run every point not yet finished (all of them without `resume`) on `executor` (default
    `Local(workers=1)`; `Serial()`, `Local(workers)`, `Dask(workers, scheduler)`), then merge the
    points and write sweep.nc, the figures and report.md / report.html.

    `kernels=False` stores each point without its kernel matrices (see `cache.store`); the merged
    sweep, its report and figures do not use them. `on_point(point, status)` is called once per
    point: "cached", "ok" or "failed".
    """
    executor = Local() if executor is None else executor
    if isinstance(executor, str) or not callable(getattr(executor, "map", None)):
        wanted = "Serial(), Local(workers) or Dask(workers, scheduler)"
        raise InputError(f"executor: pass {wanted}, not {executor!r}")
    out = Path(out)
    check_kind(out, "sweep")
    todo = {}
    for point in sweep.points:
        if resume and verified(out, point.key) is not None:
            on_point(point, "cached")
        else:
            todo[point.key] = point
    results = executor.map({key: point.config.model_dump_json() for key, point in todo.items()})
    mark_folder(out, "sweep")  # after map: an unreachable Dask scheduler fails before anything is written
    for stale in (out / "points").glob(".*"):  # temporary files of writes cut short by a kill
        stale.unlink(missing_ok=True)
    atomic_write(
        out / "sweep.toml", tomli_w.dumps(_without_none({**sweep.raw, "sweep": _table(sweep)})).encode()
    )
    for key, result in results:
        store(out, todo[key], result, kernels=kernels)
        on_point(todo[key], result.status)
    merged = merge(sweep, out)
    atomic_write(out / "sweep.nc", bytes(merged.to_netcdf(engine="scipy")))
    write_sweep_report(out, merged)
    return merged


def _table(sweep: Sweep) -> dict:  # the [sweep] table as written: zipped fields as lists
    return {
        ",".join(a.fields): [list(v) if len(a.fields) > 1 else v[0] for v in a.values] for a in sweep.axes
    }


def _without_none(value):
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    return value
