"""The points folder of a sweep: every finished point written atomically as points/HASH.nc plus a
manifest with its SHA-256 (data first, then the manifest); a failed point as points/HASH.error.json. A
point whose file is missing, truncated or altered is not finished and is computed again on --resume.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import xarray as xr

from .executors import PointResult
from .grid import Point
from .io import atomic_write


def _paths(out: Path, key: str) -> tuple[Path, Path, Path]:
    folder = Path(out) / "points"
    return folder / f"{key}.nc", folder / f"{key}.json", folder / f"{key}.error.json"


def verified(out: Path, key: str) -> bytes | None:
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
    blob = verified(out, key)
    if blob is None:
        return None
    with xr.open_dataset(io.BytesIO(blob), engine="scipy") as ds:  # parse the bytes already checked
        return ds.load()


def store(out: Path, point: Point, result: PointResult, *, kernels: bool = True) -> None:
    """Write a finished point (data first, then its manifest) or a failed point's error record;
    without `kernels`, a finished point keeps everything but its kernel matrices (the scores, CKAs,
    predictions and diagnostics a merged sweep reads): kilobytes instead of O(L P'^2) per point."""
    data, manifest, error = _paths(out, point.key)
    record = {
        "index": list(point.index),
        "config": point.config.model_dump(mode="json"),
        "seconds": result.seconds,
    }
    if result.status == "ok":
        blob = result.netcdf if kernels else _without_kernels(result.netcdf)
        atomic_write(data, blob)
        record.update(bytes=len(blob), sha256=hashlib.sha256(blob).hexdigest())
        atomic_write(manifest, json.dumps(record, indent=1).encode())
        error.unlink(missing_ok=True)
    else:
        record.update(error=result.error, traceback=result.traceback)
        atomic_write(error, json.dumps(record, indent=1).encode())
        manifest.unlink(missing_ok=True)  # an older result of this config is no longer current


def _without_kernels(netcdf: bytes) -> bytes:
    with xr.open_dataset(io.BytesIO(netcdf), engine="scipy") as ds:
        return bytes(ds.drop_vars("kernel", errors="ignore").to_netcdf(engine="scipy"))


def error_of(out: Path, key: str) -> str | None:
    try:
        return json.loads(_paths(out, key)[2].read_text())["error"]
    except (OSError, ValueError, KeyError):
        return None
