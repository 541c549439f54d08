"""Run folders: config.toml, results.nc, figures/, report.md, report.html, meta.json."""

from __future__ import annotations

import html
import json
import os
import platform
import tempfile
from pathlib import Path

import jax
import numpy as np
import tomli_w
import xarray as xr

from .. import plots
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
    write_report(out, ds)
    return out


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def load_results(out: Path) -> xr.Dataset:
    path = Path(out) / "results.nc"
    if not path.exists():
        raise InputError(f"DIR: {path} does not exist; run an experiment first")
    with xr.open_dataset(path, engine="scipy") as ds:
        return ds.load()


def write_report(out: Path, ds: xr.Dataset) -> None:
    """Figures and report.md / report.html from a results Dataset."""
    out = Path(out)
    figures = out / "figures"
    methods = [str(m) for m in ds.method.values]
    P = int(ds.attrs["n_train"])
    cka, cka_se, errors = ds.cka.values, ds.cka_se.values, ds.test_error.values  # rows follow `methods`
    plots.cka_by_method(
        ds.layer.values,
        dict(zip(methods, cka, strict=True)),
        dict(zip(methods, cka_se, strict=True)),
        figures / "cka_per_layer.png",
        title=f"{ds.attrs['name']}: {ds.attrs['data']}",
    )
    plots.kernel_heatmaps(
        dict(zip(methods, ds.kernel.values[:, :, :P, :P], strict=True)), figures / "kernels.png"
    )
    rows = [
        f"| {m} | " + " | ".join(f"{c:.4f}" for c in cka[i]) + f" | {errors[i]:.3f} |"
        for i, m in enumerate(methods)
    ]
    header = "| kernel | " + " | ".join(f"C{l}" for l in ds.layer.values) + " | test error |"
    lines = [
        f"# {ds.attrs['name']}",
        "",
        f"Data: {ds.attrs['data']}, P = {P}.",
        "",
        "## CKA with the target kernel per layer (T16)",
        "",
        header,
        "|" + "---|" * (len(ds.layer) + 2),
        *rows,
        "",
        "![CKA per layer](figures/cka_per_layer.png)",
        "",
        "![Kernels](figures/kernels.png)",
        "",
        "## Convergence and diagnostics",
        "",
        *[
            f"- {k}: {_plain(v)}"
            for k, v in ds.attrs.items()
            if k.startswith(("map_", "sampl", "rhat", "acc"))
        ],
        f"- timings [s]: {ds.attrs['timings']}",
    ]
    text = "\n".join(lines) + "\n"
    atomic_write(out / "report.md", text.encode())
    body = "".join(_html_line(line) for line in lines)
    atomic_write(out / "report.html", f"<!doctype html><html><body>{body}</body></html>\n".encode())


def _html_line(line: str) -> str:
    if line.startswith("# "):
        return f"<h1>{html.escape(line[2:])}</h1>"
    if line.startswith("## "):
        return f"<h2>{html.escape(line[3:])}</h2>"
    if line.startswith("!["):
        src = line[line.index("(") + 1 : -1]
        return f'<p><img src="{html.escape(src)}" width="720"></p>'
    if line.startswith("|"):
        if set(line) <= {"|", "-"}:
            return ""
        cells = "".join(f"<td>{html.escape(c.strip())}</td>" for c in line.strip("|").split("|"))
        return f"<table><tr>{cells}</tr></table>"
    return f"<p>{html.escape(line)}</p>" if line else ""
