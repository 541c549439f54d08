"""Run folders on disk: atomic writes, config.toml, results.nc, meta.json; reading them back."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path

import jax
import numpy as np
import tomli_w
import xarray as xr

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
    from .report import write_report  # the report reads what io wrote

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
