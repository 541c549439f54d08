"""Folders on disk: atomic writes, folder kinds, the resolved config.toml; reading results back
(report.write_run writes a run folder).

Every folder this tool writes carries a marker file (MARKER) naming its kind (run, sweep or demo),
so a later command can tell its own folders from anything else and never overwrite silently.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import tomli_w
import xarray as xr

from .. import __version__
from ..errors import CriticalKernelsError, InputError
from .config import ExperimentConfig

MARKER = ".critical_kernels.json"
KINDS = ("run", "sweep", "demo")


def atomic_write(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; results are for sharing
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _drop_none(value):
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


# ---------------------------------------------------------------------------------- folder kinds


def folder_kind(path: Path) -> str | None:
    """ "run", "sweep" or "demo" for a folder this tool wrote (its marker; for folders written before
    markers existed, their files), None for anything else."""
    path = Path(path)
    try:
        kind = json.loads((path / MARKER).read_text())["kind"]
        if kind in KINDS:
            return kind
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if (path / "sweep.toml").is_file():
        return "demo" if (path / "cka.csv").is_file() else "sweep"
    if (path / "results.nc").is_file() and (path / "config.toml").is_file():
        return "run"
    return None


def mark_folder(out: Path, kind: str) -> None:
    """Write the marker of a folder of `kind`, unless it has one already."""
    if not (Path(out) / MARKER).exists():
        record = {"kind": kind, "version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write(Path(out) / MARKER, json.dumps(record).encode())


def check_kind(out: Path, kind: str) -> None:
    """InputError if `out` is a folder of another kind (a run is never written into a sweep folder,
    nor a sweep into a run folder: their reports and files would be mixed)."""
    found = folder_kind(out) if Path(out).is_dir() else None
    compatible = {"run": {"run"}, "sweep": {"sweep", "demo"}, "demo": {"demo"}}[kind]  # a demo is a sweep
    if found is not None and found not in compatible:
        raise InputError(
            f"--out: {out} is a {found} folder; a {kind} is not written into it, even with --force "
            "(choose another --out)"
        )


def check_output_folder(out: Path, kind: str, *, force: bool = False, resume: bool = False) -> None:
    """Refuse, with one line of advice, to write a folder of `kind` where it would overwrite silently.

    Accepted: a new or empty folder; a folder of the same kind with `resume` (sweeps, demo, a killed
    run) or `force`; a folder not written by this tool with `force`. Refused always: a file in the way, and a
    folder of another kind (run against sweep/demo).
    """
    out = Path(out)
    for parent in (out, *out.parents):
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                what = "is a file" if parent == out else f"is below the file {parent}"
                raise InputError(f"--out: {out} {what}; choose a folder")
            break
    if not out.is_dir():
        return
    try:
        empty = next(out.iterdir(), None) is None
    except OSError as err:
        raise InputError(f"--out: cannot read {out} ({err.strerror}); choose another folder") from None
    if empty:
        return
    found = folder_kind(out)
    if found is not None and found != kind:
        raise InputError(
            f"--out: {out} is a {found} folder; a {kind} is not written into it, even with --force "
            "(choose another --out)"
        )
    if found is None and not force:
        raise InputError(
            f"--out: {out} is not empty and was not written by critical-kernels; choose a new folder, "
            "or pass --force to write into it"
        )
    if found is not None and not (force or resume):
        if kind == "run":
            advice = "pass --resume to continue it (sampled chains go on from their checkpoint), --force "
            advice += "to overwrite it, or choose another --out"
        else:
            advice = "pass --resume to continue it (finished points are kept) or --force to recompute it"
        raise InputError(f"--out: {out} already holds a {found}; {advice}")


@contextmanager
def output_folder(out: Path, kind: str, *, force: bool = False, resume: bool = False) -> Iterator[Path]:
    """Check (`check_output_folder`), create and mark an output folder for the body of a `with`.

    If the body raises bad input (CriticalKernelsError), or anything while the folder holds nothing
    but its marker, the folders this call created are removed again: nothing half-written is left.
    """
    out = Path(out)
    check_output_folder(out, kind, force=force, resume=resume)
    created = next((p for p in (*reversed(out.parents), out) if not p.exists()), None)
    try:
        out.mkdir(parents=True, exist_ok=True)
        mark_folder(out, kind)
    except OSError as err:
        _remove(created)
        raise InputError(
            f"--out: cannot write to {out} ({err.strerror or err}); choose another folder"
        ) from None
    try:
        yield out
    except BaseException as err:
        only_marker = [p.name for p in out.iterdir()] == [MARKER] if out.is_dir() else True
        if isinstance(err, CriticalKernelsError) or only_marker:
            _remove(created)
        raise


def _remove(created: Path | None) -> None:
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)


# ------------------------------------------------------------------------------------- run folders


def resolved_toml(config: ExperimentConfig, values: dict) -> str:
    """config.toml of a run: the resolved config with the g_w actually used (where it was given as
    `g_w_over_g_c`, that ratio and g_c become comments), so `load_config` of it gives the same spec."""
    raw = _drop_none(config.model_dump(mode="json"))
    ratio = raw["network"].pop("g_w_over_g_c", None)
    raw["network"]["g_w"] = values["g_w"]
    text = tomli_w.dumps(raw)
    header = [
        f"# Resolved configuration, written by critical-kernels {__version__};",
        "# `critical-kernels run` of this file repeats the run.",
        f"# Derived: g_c = {values['g_c']:.10g} (edge of chaos), chi_1 = {values['chi_1']:.10g}, "
        f"alpha = P/N = {values['alpha']:.6g}",
    ]
    if ratio is not None:
        note = f"# g_w below = g_w_over_g_c x g_c = {ratio!r} x {values['g_c']!r}\n"
        text = text.replace("[network]\n", "[network]\n" + note, 1)
    return "\n".join(header) + "\n" + text


def read_netcdf(path: Path, advice: str, required: tuple[str, ...] = ()) -> xr.Dataset:
    """A NetCDF file loaded into memory (the file is closed again); InputError if it is missing,
    unreadable or lacks one of the `required` variables."""
    if not Path(path).is_file():
        raise InputError(f"DIR: {path} does not exist; {advice}")
    try:
        with xr.open_dataset(path, engine="scipy") as ds:
            ds = ds.load()
    except Exception as err:  # scipy and xarray raise many types for a damaged file
        raise InputError(
            f"DIR: {path} is not a readable NetCDF file ({type(err).__name__}); {advice}"
        ) from None
    missing = [name for name in required if name not in ds.variables and name not in ds.attrs]
    if missing:
        raise InputError(f"DIR: {path} lacks {', '.join(missing)}; {advice}")
    return ds


def load_results(out: Path) -> xr.Dataset:
    """The Dataset of a run folder."""
    return read_netcdf(
        Path(out) / "results.nc",
        "run the experiment again (critical-kernels run CONFIG --out DIR --force)",
        required=("kernel", "cka", "cka_se", "test_error", "Y", "name", "data", "n_train", "timings"),
    )
