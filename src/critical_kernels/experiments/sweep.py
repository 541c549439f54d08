"""Sweeps: a grid of experiments, each point cached under the hash of its resolved config.

A sweep config is an experiment config with a [sweep] table whose keys are dotted fields and whose
values are lists; the grid is their product. A key naming several fields, "network.width,data.n_train",
varies them together (each value a list with one entry per field), e.g. width and P at fixed alpha.

Points run in worker processes (each pinned to one core, so XLA uses one thread) or on Dask. Every
finished point is written atomically as points/HASH.nc plus a manifest with its SHA-256; a point
whose file is missing, truncated or altered is not finished and is computed again on --resume.
"""

from __future__ import annotations

import gc
import hashlib
import io
import itertools
import json
import multiprocessing
import numbers
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import tomli_w
import xarray as xr

from .. import __version__
from ..criticality import critical_gain
from ..errors import CriticalKernelsError, InputError
from ..estimators.registry import REGISTRY
from ..runtime import THREADS_VARIABLE, use_one_xla_thread
from .config import ExperimentConfig, apply_overrides, read_toml, set_field, validate
from .io import atomic_write, check_kind, mark_folder, read_netcdf
from .run import run

EXECUTORS = ("local", "dask", "serial")
CACHE_FORMAT = 2  # bump when the Dataset a point stores changes, so old caches are recomputed


@dataclass(frozen=True)
class Axis:
    """One grid dimension: the fields it sets and one tuple of values per grid index."""

    name: str
    fields: tuple[str, ...]
    values: tuple[tuple, ...]


@dataclass(frozen=True)
class Point:
    """One grid point: its index along every axis, its resolved config and that config's hash."""

    index: tuple[int, ...]
    config: ExperimentConfig

    @cached_property
    def key(self) -> str:
        return config_hash(self.config)


@dataclass(frozen=True)
class Sweep:
    name: str
    axes: tuple[Axis, ...]
    points: tuple[Point, ...]
    raw: dict

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(axis.values) for axis in self.axes)


def config_hash(config: ExperimentConfig) -> str:
    """Hash of a resolved config, the package version and the cache format (the cache key of a point)."""
    identity = {"version": __version__, "format": CACHE_FORMAT, "config": config.model_dump(mode="json")}
    text = json.dumps(identity, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def load_sweep(source: str | Path | dict, overrides: list[str] = ()) -> Sweep:
    """Parse and validate a sweep config: every grid point is validated before anything runs."""
    raw = apply_overrides(read_toml(source), overrides)
    table = raw.pop("sweep", None)
    if not isinstance(table, dict) or not table:
        raise InputError('sweep: the config needs a [sweep] table of lists, e.g. "network.g_w" = [1, 2]')
    axes = [_axis(key, values) for key, values in table.items()]
    seen = {}
    for key, axis in zip(table, axes, strict=True):
        for field in axis.fields:
            if field in seen:
                where = f'in "{key}"' if seen[field] == key else f'in "{seen[field]}" and "{key}"'
                raise InputError(f"sweep.{field}: swept twice ({where}); sweep each field in one key only")
            seen[field] = key
    names = [axis.name for axis in axes]
    if len(set(names)) < len(names):  # two fields with the same leaf name: use full paths
        axes = [Axis(a.fields[0].replace(".", "_"), a.fields, a.values) for a in axes]
    points = []
    for index in itertools.product(*(range(len(a.values)) for a in axes)):
        point_raw = json.loads(json.dumps(raw))
        for axis, i in zip(axes, index, strict=True):
            for field, value in zip(axis.fields, axis.values[i], strict=True):
                set_field(point_raw, field, value)
        label = ", ".join(f"{a.name}={_label(a.values[i][0])}" for a, i in zip(axes, index, strict=True))
        points.append(Point(index, validate(point_raw, where=f"sweep point ({label}): ")))
    return Sweep(str(raw.get("name", "sweep")), tuple(axes), tuple(points), raw)


def _axis(key: str, values) -> Axis:
    fields = tuple(f.strip() for f in key.split(","))
    if not isinstance(values, list) or not values:
        raise InputError(f"sweep.{key}: must be a non-empty list (got {values!r})")
    if len(fields) == 1:
        rows = tuple((v,) for v in values)
    else:
        if not all(isinstance(v, list) and len(v) == len(fields) for v in values):
            raise InputError(f"sweep.{key}: every value must be a list of {len(fields)} (one per field)")
        rows = tuple(tuple(v) for v in values)
    if len({json.dumps(r) for r in rows}) < len(rows):
        raise InputError(f"sweep.{key}: a value is repeated (got {values!r})")
    return Axis(fields[0].split(".")[-1], fields, rows)


def _label(value):
    """A grid coordinate: scalars as they are, per-layer lists as text."""
    return value if isinstance(value, int | float | str | bool) else json.dumps(value)


# ------------------------------------------------------------------------------------------ cache


def _paths(out: Path, key: str) -> tuple[Path, Path, Path]:
    folder = Path(out) / "points"
    return folder / f"{key}.nc", folder / f"{key}.json", folder / f"{key}.error.json"


def _verified(out: Path, key: str) -> bytes | None:
    """A finished point's NetCDF bytes, or None if missing or failing its manifest's SHA-256."""
    data, manifest, _ = _paths(out, key)
    try:
        meta = json.loads(manifest.read_text())
        blob = data.read_bytes()
    except (OSError, ValueError):
        return None
    if len(blob) != meta.get("bytes") or hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        return None
    return blob


def load_point(out: Path, key: str) -> xr.Dataset | None:
    """A finished point's Dataset, or None if it is missing or its file fails the SHA-256 check."""
    blob = _verified(out, key)
    if blob is None:
        return None
    with xr.open_dataset(io.BytesIO(blob), engine="scipy") as ds:  # parse the bytes already checked
        return ds.load()


def _store(out: Path, point: Point, status: str, payload, seconds: float) -> None:
    """Write a finished point (data first, then its manifest) or a failed point's error record."""
    data, manifest, error = _paths(out, point.key)
    record = {"index": list(point.index), "config": point.config.model_dump(mode="json"), "seconds": seconds}
    if status == "ok":
        atomic_write(data, payload)
        record.update(bytes=len(payload), sha256=hashlib.sha256(payload).hexdigest())
        atomic_write(manifest, json.dumps(record, indent=1).encode())
        error.unlink(missing_ok=True)
    else:
        record.update(error=payload[0], traceback=payload[1])
        atomic_write(error, json.dumps(record, indent=1).encode())
        manifest.unlink(missing_ok=True)  # an older result of this config is no longer current


def _error_of(out: Path, key: str) -> str | None:
    try:
        return json.loads(_paths(out, key)[2].read_text())["error"]
    except (OSError, ValueError, KeyError):
        return None


# ---------------------------------------------------------------------------------------- workers


def compute_point(config_json: str) -> tuple[str, object, float]:
    """Run one experiment (in a worker): ("ok", NetCDF bytes, s) or ("failed", (message, traceback), s)."""
    start = time.perf_counter()
    try:
        ds = run(ExperimentConfig.model_validate_json(config_json), progress=False)
        return "ok", bytes(ds.to_netcdf(engine="scipy")), time.perf_counter() - start
    except Exception as err:  # a failed point is recorded and the sweep goes on
        return "failed", (f"{type(err).__name__}: {err}", traceback.format_exc()), time.perf_counter() - start


def pin_to_one_core(cpu: int) -> None:
    """Pin every thread of this process to one core, so XLA's thread pools use one core."""
    if not hasattr(os, "sched_setaffinity"):  # pragma: no cover - not Linux
        return
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), {cpu})
        except OSError:  # pragma: no cover - a thread that just ended
            pass


@contextmanager
def _workers_with_one_xla_thread() -> Iterator[None]:
    """Worker processes started in the body get PJRT_NPROC=1 where jaxlib needs it (runtime.py): they
    start JAX's backend while importing this module, before any hook of ours could run. This process's
    own environment is left as it was."""
    before = os.environ.get(THREADS_VARIABLE)
    use_one_xla_thread()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(THREADS_VARIABLE, None)


def _init_local_worker(counter, cpus: list[int]) -> None:
    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    pin_to_one_core(cpus[slot % len(cpus)])


def _run_local(jobs: dict, workers: int) -> Iterator[tuple[str, tuple]]:
    """Worker processes (spawned, since JAX does not survive fork), one core each."""
    context = multiprocessing.get_context("spawn")
    counter = context.Value("i", 0)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(workers))
    with ProcessPoolExecutor(
        workers, context, initializer=_init_local_worker, initargs=(counter, cpus)
    ) as pool:
        with _workers_with_one_xla_thread():  # the workers are spawned at the first submit
            futures = {pool.submit(compute_point, text): key for key, text in jobs.items()}
        for future in as_completed(futures):
            try:
                yield futures[future], future.result()
            except Exception as err:  # the worker process died (memory, signal)
                yield futures[future], ("failed", (f"worker died: {type(err).__name__}: {err}", ""), 0.0)


def _pin_dask_worker(dask_worker) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    pin_to_one_core(cpus[int(dask_worker.name) % len(cpus)])


CONNECT_TIMEOUT_S = 3  # an unreachable --scheduler fails after this long, with one line


def _dask_client(workers: int, scheduler: str | None):
    """A Dask client: on a scheduler address (InputError within CONNECT_TIMEOUT_S if it cannot be
    reached), or on a LocalCluster of single-threaded worker processes; and that cluster or None."""
    try:  # dask is an optional extra, imported only when asked for
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise InputError(
            "--executor dask: install the dask extra (pip install 'critical-kernels[dask]')"
        ) from None
    if scheduler is None:
        with _workers_with_one_xla_thread():
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
        client = Client(cluster)
        client.run(_pin_dask_worker)
        return client, cluster
    failure = None
    hook = sys.unraisablehook  # a Client that failed to connect complains when it is collected
    sys.unraisablehook = lambda _: None
    try:
        try:
            return Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s"), None
        except Exception as err:  # OSError (timeout), ValueError (address), anything from the transport
            failure = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:200]
        gc.collect()
    finally:
        sys.unraisablehook = hook
    raise InputError(
        f"--scheduler: no Dask scheduler reachable at {scheduler!r} within {CONNECT_TIMEOUT_S} s "
        f"({failure}); start one (`dask scheduler`) or leave out --scheduler"
    )


def _run_dask(jobs: dict, client, cluster) -> Iterator[tuple[str, tuple]]:
    """Dask distributed: run the jobs on `client`, then close it (and `cluster`, if any)."""
    from dask.distributed import as_completed as dask_completed  # optional extra: lazy, as above

    try:
        with client:
            futures = {client.submit(compute_point, text, pure=False): key for key, text in jobs.items()}
            for future in dask_completed(futures):
                try:
                    yield futures[future], future.result()
                except Exception as err:  # a lost worker
                    yield futures[future], ("failed", (f"worker died: {type(err).__name__}: {err}", ""), 0.0)
    finally:
        if cluster is not None:
            cluster.close()


def _run_serial(jobs: dict) -> Iterator[tuple[str, tuple]]:
    for key, text in jobs.items():
        yield key, compute_point(text)


# ------------------------------------------------------------------------------------------- sweep


def run_sweep(
    sweep: Sweep,
    out: Path,
    *,
    resume: bool = False,
    executor: str = "local",
    workers: int = 1,
    scheduler: str | None = None,
    on_point: Callable[[Point, str], None] = lambda point, status: None,
) -> xr.Dataset:
    """Run every point not yet finished (all of them without `resume`), then merge and write sweep.nc.

    `on_point(point, status)` is called once per point: "cached", "ok" or "failed".
    """
    if executor not in EXECUTORS:
        raise InputError(f"--executor: must be one of {EXECUTORS} (got {executor!r})")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"--workers: must be at least 1 (got {workers})")
    out = Path(out)
    check_kind(out, "sweep")
    dask = executor == "dask" or scheduler is not None
    client, cluster = _dask_client(workers, scheduler) if dask else (None, None)  # fails before writing
    mark_folder(out, "sweep")
    for stale in (out / "points").glob(".*"):  # temporary files of writes cut short by a kill
        stale.unlink(missing_ok=True)
    atomic_write(
        out / "sweep.toml", tomli_w.dumps(_without_none({**sweep.raw, "sweep": _table(sweep)})).encode()
    )
    todo = {}
    for point in sweep.points:
        if resume and _verified(out, point.key) is not None:
            on_point(point, "cached")
        else:
            todo[point.key] = point
    jobs = {key: point.config.model_dump_json() for key, point in todo.items()}
    if executor == "serial":
        results = _run_serial(jobs)
    elif dask:
        results = _run_dask(jobs, client, cluster)
    else:
        results = _run_local(jobs, workers)
    for key, (status, payload, seconds) in results:
        _store(out, todo[key], status, payload, seconds)
        on_point(todo[key], status)
    merged = merge(sweep, out)
    atomic_write(out / "sweep.nc", merged.to_netcdf(engine="scipy"))
    return merged


def _table(sweep: Sweep) -> dict:
    return {",".join(a.fields): [list(v) if len(v) > 1 else v[0] for v in a.values] for a in sweep.axes}


def _without_none(value):
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    return value


# the per-point diagnostics a merged sweep keeps, named as the run attrs they come from
TEXT_PARTS = ("result", "method", "se_kind", "se_count")  # of every registered estimator, as text
POINT_SCALARS = (
    "perturbative_n_samples",
    "map_n_iter",
    "map_residual",
    "map_n_samples",
    "reweighted_ess",
    "reweighted_n_samples",
    "sampled_networks_test_error",
)
POINT_LAYERS = ("sampled_rhat_cka", "sampled_ess_cka")  # per layer


def point_texts() -> tuple[str, ...]:
    """The text diagnostics a sweep keeps per point: TEXT_PARTS of every registered estimator."""
    return tuple(f"{name}_{part}" for name in REGISTRY for part in TEXT_PARTS)


def point_scalars() -> tuple[str, ...]:
    """The numeric diagnostics a sweep keeps per point: POINT_SCALARS, every E_approximation."""
    return (*POINT_SCALARS, *(f"{name}_approximation" for name in REGISTRY))


def merge(sweep: Sweep, out: Path) -> xr.Dataset:
    """One Dataset over the grid: CKA per method and layer (NaN past a point's depth), output-layer
    CKA, test errors, diagnostics (point_texts, point_scalars, POINT_LAYERS), and each point's status
    ("ok", "failed", "missing") and error."""
    loaded = {point.index: load_point(out, point.key) for point in sweep.points}
    done = [ds for ds in loaded.values() if ds is not None]
    methods = list(dict.fromkeys(str(m) for ds in done for m in ds.estimator.values)) or ["nngp"]
    n_layers = max((ds.sizes["layer"] for ds in done), default=1)
    grid = _empty_grid(sweep.shape, len(methods), n_layers)
    for point in sweep.points:
        i, ds = point.index, loaded[point.index]
        grid["g_c"][1][i] = _g_c(point.config)
        grid["g_w_used"][1][i] = _g_w_used(point.config, grid["g_c"][1][i])
        if ds is not None:
            _fill_point(grid, i, ds, [methods.index(str(m)) for m in ds.estimator.values])
        elif (message := _error_of(out, point.key)) is not None:
            grid["status"][1][i], grid["error"][1][i] = "failed", message
    dims = tuple(axis.name for axis in sweep.axes)
    variables = {
        name: (dims + extra, values.astype(str) if values.dtype == object else values)
        for name, (extra, values) in grid.items()
    }
    return xr.Dataset(
        variables,
        coords=_grid_coords(sweep, methods, n_layers),
        attrs={
            "name": sweep.name,
            "fields": json.dumps({a.name: list(a.fields) for a in sweep.axes}),
            **({"versions": done[0].attrs["versions"]} if done and "versions" in done[0].attrs else {}),
        },
    )


def _empty_grid(shape: tuple, n_methods: int, n_layers: int) -> dict[str, tuple[tuple, np.ndarray]]:
    """name -> (dimensions beyond the grid's, values): NaN, "" and "missing" until a point fills them."""
    full = lambda *extra: np.full(shape + extra, np.nan)  # noqa: E731
    text = lambda fill="": np.full(shape, fill, dtype=object)  # noqa: E731
    per_layer, per_method = ("estimator", "layer"), ("estimator",)
    return {
        "cka": (per_layer, full(n_methods, n_layers)),
        "cka_se": (per_layer, full(n_methods, n_layers)),
        **{
            name: (per_method, full(n_methods))
            for name in ("cka_out", "cka_out_se", "test_error", "test_mse")
        },
        "status": ((), text("missing")),
        "error": ((), text()),
        **{name: ((), full()) for name in (*point_scalars(), "g_c", "g_w_used", "seconds")},
        **{name: ((), text()) for name in point_texts()},
        **{name: (("layer",), full(n_layers)) for name in POINT_LAYERS},
    }


def _fill_point(grid: dict, i: tuple, ds: xr.Dataset, rows: list[int]) -> None:
    """Enter a finished point's Dataset at grid index i (its estimators at `rows`)."""
    depth = ds.sizes["layer"]
    grid["status"][1][i] = "ok"
    grid["cka"][1][i][rows, :depth] = ds.cka.values
    grid["cka_se"][1][i][rows, :depth] = ds.cka_se.values
    grid["cka_out"][1][i][rows] = ds.cka.values[:, -1]
    grid["cka_out_se"][1][i][rows] = ds.cka_se.values[:, -1]
    grid["test_error"][1][i][rows] = ds.test_error.values
    grid["test_mse"][1][i][rows] = ds.test_mse.values
    for name in point_scalars():
        grid[name][1][i] = _number(ds.attrs.get(name))
    for name in point_texts():
        grid[name][1][i] = str(ds.attrs.get(name, ""))
    for name in POINT_LAYERS:
        values = np.atleast_1d(ds.attrs.get(name, []))
        grid[name][1][i][: len(values)] = values
    grid["seconds"][1][i] = sum(json.loads(ds.attrs["timings"]).values())


def _number(value) -> float:
    """A scalar attr as a float (NaN where it is absent or not a number, e.g. "none")."""
    return float(value) if isinstance(value, numbers.Real) else np.nan


def _grid_coords(sweep: Sweep, methods: list[str], n_layers: int) -> dict:
    """The swept values (the first field of each axis names it; the others of a zipped axis are
    coordinates along it), the estimators and the layers."""
    dims = tuple(axis.name for axis in sweep.axes)
    coords = {axis.name: [_label(v[0]) for v in axis.values] for axis in sweep.axes}
    for axis in sweep.axes:
        for j, field in enumerate(axis.fields[1:], start=1):
            name = field.split(".")[-1]
            name = field.replace(".", "_") if name in coords or name in dims else name
            coords[name] = (axis.name, [_label(v[j]) for v in axis.values])
    return {**coords, "estimator": methods, "layer": np.arange(n_layers)}


def point_attrs(ds: xr.Dataset, where: dict) -> dict:
    """The diagnostics of one point of a merged sweep (`where`: its index per dimension), named as
    the run attrs they come from, for the labels and flags of labels.py."""
    out = {}
    for name in (*point_texts(), *point_scalars(), *POINT_LAYERS):
        if name in ds:
            values = ds[name].isel(where).values
            out[name] = values.item() if values.ndim == 0 else values
    return out


def ok_points(ds: xr.Dataset) -> list[dict]:
    """The index (per dimension) of every finished point of a merged sweep."""
    dims = ds.status.dims
    return [dict(zip(dims, i, strict=True)) for i in zip(*np.nonzero(ds.status.values == "ok"), strict=True)]


def _g_c(config: ExperimentConfig) -> float:
    """The critical g_c of a point's activation and bias variance (NaN where it has none)."""
    g_b = config.network.g_b
    if not np.isscalar(g_b):
        return np.nan
    try:
        return critical_gain(config.network.activation, g_b)
    except CriticalKernelsError:
        return np.nan


def _g_w_used(config: ExperimentConfig, g_c: float) -> float:
    """The scalar g_w a point ran with (NaN where it varies per layer)."""
    net = config.network
    if net.g_w_over_g_c is not None:
        return net.g_w_over_g_c * g_c
    return float(net.g_w) if np.isscalar(net.g_w) else np.nan


def load_sweep_results(out: Path) -> xr.Dataset:
    """The merged Dataset of a sweep folder."""
    return read_netcdf(
        Path(out) / "sweep.nc",
        "run the sweep again (critical-kernels sweep CONFIG --out DIR --resume)",
        required=("cka", "cka_se", "cka_out", "status", "error", "name", "fields"),
    )
