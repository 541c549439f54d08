"""Merging a sweep: the finished points of the cache as one xarray Dataset over the grid (CKA per
estimator and layer, test errors, per-point diagnostics, status and error)."""

from __future__ import annotations

import json
import numbers
from pathlib import Path

import numpy as np
import xarray as xr

from ..critical_point import critical_gain
from ..errors import CriticalKernelsError
from ..estimators.registry import REGISTRY
from .cache import error_of, load_point
from .config import ExperimentConfig
from .grid import Sweep, coordinate
from .io import read_netcdf
from .runner import TEST_SCORES

# the per-point diagnostics a merged sweep keeps, named as the run attrs they come from
TEXT_PARTS = ("result", "method", "se_kind", "se_count")  # of every registered estimator, as text
POINT_SCALARS = (
    "perturbative_n_samples",
    "map_n_iter",
    "map_residual",
    "map_n_samples",
    "reweighted_ess",
    "reweighted_n_samples",
)
POINT_LAYERS = ("sampled_rhat_cka", "sampled_ess_cka")  # per layer


def point_texts() -> tuple[str, ...]:
    """The text diagnostics a sweep keeps per point: TEXT_PARTS of every registered estimator."""
    return tuple(f"{name}_{part}" for name in REGISTRY for part in TEXT_PARTS)


def point_scalars() -> tuple[str, ...]:
    """The numeric diagnostics a sweep keeps per point: POINT_SCALARS, every E_approximation."""
    return (*POINT_SCALARS, *(f"{name}_approximation" for name in REGISTRY))


ANSWERED = ("ok", "partial")  # point statuses with a Dataset: every estimator answered, or not all


def unanswered(ds: xr.Dataset) -> list[str]:
    """The estimators of a run that gave no answer: a NaN CKA in every hidden and output layer."""
    adapted = ds.cka.sel(layer=ds.layer.values[ds.layer.values >= 1])
    return [
        str(m) for m, ckas in zip(ds.estimator.values, adapted.values, strict=True) if np.isnan(ckas).all()
    ]


def merge(sweep: Sweep, out: Path) -> xr.Dataset:
    """One Dataset over the grid: CKA per method and layer (NaN past a point's depth), output-layer
    CKA, test errors, diagnostics (point_texts, point_scalars, POINT_LAYERS), and each point's status
    ("ok"; "partial" where an estimator gave no answer, named in `error` with its message; "failed";
    "missing") and error."""
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
        elif (message := error_of(out, point.key)) is not None:
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
        **{name: (per_method, full(n_methods)) for name in ("cka_out", "cka_out_se", *TEST_SCORES)},
        "estimator_seconds": (per_method, full(n_methods)),
        "status": ((), text("missing")),
        "error": ((), text()),
        **{name: ((), full()) for name in (*point_scalars(), "g_c", "g_w_used", "seconds")},
        **{name: ((), text()) for name in point_texts()},
        **{name: (("layer",), full(n_layers)) for name in POINT_LAYERS},
    }


def _fill_point(grid: dict, i: tuple, ds: xr.Dataset, rows: list[int]) -> None:
    """Enter a finished point's Dataset at grid index i (its estimators at `rows`)."""
    depth = ds.sizes["layer"]
    missing = unanswered(ds)
    grid["status"][1][i] = "partial" if missing else "ok"
    reasons = [ds.attrs.get(f"{name}_message", "") or f"{name}: no answer" for name in missing]
    grid["error"][1][i] = "; ".join(reasons)
    grid["cka"][1][i][rows, :depth] = ds.cka.values
    grid["cka_se"][1][i][rows, :depth] = ds.cka_se.values
    grid["cka_out"][1][i][rows] = ds.cka.values[:, -1]
    grid["cka_out_se"][1][i][rows] = ds.cka_se.values[:, -1]
    for name in TEST_SCORES:
        if name in ds:  # a point cached before 0.8 has only test_error and test_mse
            grid[name][1][i][rows] = ds[name].values
    for name in point_scalars():
        grid[name][1][i] = _number(ds.attrs.get(name))
    for name in point_texts():
        grid[name][1][i] = str(ds.attrs.get(name, ""))
    for name in POINT_LAYERS:
        values = np.atleast_1d(ds.attrs.get(name, []))
        grid[name][1][i][: len(values)] = values
    timings = json.loads(ds.attrs["timings"])
    grid["seconds"][1][i] = sum(timings.values())
    grid["estimator_seconds"][1][i][rows] = [timings.get(str(m), np.nan) for m in ds.estimator.values]


def _number(value) -> float:
    """A scalar attr as a float (NaN where it is absent or not a number, e.g. "none")."""
    return float(value) if isinstance(value, numbers.Real) else np.nan


def _grid_coords(sweep: Sweep, methods: list[str], n_layers: int) -> dict:
    """The swept values (the first field of each axis names it; the others of a zipped axis are
    coordinates along it), the estimators and the layers."""
    dims = tuple(axis.name for axis in sweep.axes)
    coords: dict[str, object] = {axis.name: [coordinate(v[0]) for v in axis.values] for axis in sweep.axes}
    for axis in sweep.axes:
        for j, field in enumerate(axis.fields[1:], start=1):
            name = field.split(".")[-1]
            name = field.replace(".", "_") if name in coords or name in dims else name
            coords[name] = (axis.name, [coordinate(v[j]) for v in axis.values])
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
    """The index (per dimension) of every finished point of a merged sweep (ok or partial)."""
    dims = ds.status.dims
    answered = np.isin(ds.status.values, ANSWERED)
    return [dict(zip(dims, i, strict=True)) for i in zip(*np.nonzero(answered), strict=True)]


def _g_c(config: ExperimentConfig) -> float:
    """The critical g_c of a point's activation and bias variance (NaN where it has none)."""
    g_b = config.network.g_b
    if isinstance(g_b, list):
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
    return np.nan if isinstance(net.g_w, list) else float(net.g_w)


def load_sweep_results(out: Path) -> xr.Dataset:
    """The merged Dataset of a sweep folder."""
    return read_netcdf(
        Path(out) / "sweep.nc",
        "run the sweep again (critical-kernels sweep CONFIG --out DIR --resume)",
        required=("cka", "cka_se", "cka_out", "status", "error", "name", "fields"),
    )
