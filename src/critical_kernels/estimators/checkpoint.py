"""Checkpoints of a sampling run: the chains' states and every finished batch, written atomically
after the warm-up and after each batch, so a killed `sample_posterior` resumes where it stopped.

A checkpoint belongs to one run: its fingerprint hashes what the draws depend on (network, sampler,
schedule, key and data). The batch keys are fixed by the run's key, so a resumed run draws exactly
what the uninterrupted one would have.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np

from .. import __version__
from ..errors import InputError
from .options import as_dict


class Progress(NamedTuple):
    """What a run has done: chain states after the last finished step, step sizes (chains,), the
    per-batch sums and per-draw records (one entry per finished batch) and the timings so far."""

    states: object
    eps: np.ndarray
    sums: list
    per_draw: list
    timings: dict


def _network(spec) -> dict:
    """The network as plain numbers and names: stable across processes (a repr of a callable is not)."""
    source = spec.act.source
    activation = source if isinstance(source, str) else f"{source.__module__}.{source.__qualname__}"
    fields = dict(depth=spec.depth, width=spec.width, g_in=spec.g_in, kappa=spec.kappa, n_out=spec.n_out)
    numbers = {k: float(v) for k, v in fields.items()}
    return numbers | {
        "activation": activation,
        "gains": list(map(float, spec.gains)),
        "bias_vars": list(map(float, spec.bias_vars)),
        "quad_degree": spec.quad_degree,
    }


def fingerprint(spec, sampler, chains, key, X, Y) -> str:
    """A hash of everything the draws depend on (not the progress bar, nor the file itself), with the
    versions of this package, JAX and BlackJAX that drew them."""
    schedule = {k: v for k, v in as_dict(chains).items() if k not in ("progress", "checkpoint")}
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    key_data = np.asarray(jax.random.key_data(key) if typed else key)
    versions = [__version__, jax.__version__, blackjax.__version__, jax.default_backend()]
    h = hashlib.sha256()
    for part in (_network(spec), type(sampler).__name__, as_dict(sampler), schedule, versions):
        h.update(json.dumps(part, sort_keys=True).encode())
    for array in (key_data, np.asarray(X), np.asarray(Y)):
        h.update(f"{array.shape} {array.dtype}".encode() + np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def check_path(path: Path) -> None:
    """Refuse, before any sampling, a checkpoint path that cannot be written."""
    if path.is_dir() or not path.parent.is_dir():
        where = "is a folder" if path.is_dir() else f"is in a folder that does not exist ({path.parent})"
        raise InputError(f"Chains.checkpoint: {path} {where}; give a file in an existing folder")


def save_progress(path: Path, mark: str, done: Progress) -> None:
    """Write `done` to path atomically (a temporary file, then a rename)."""
    arrays = {f"state/{i}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(done.states))}
    arrays["eps"] = np.asarray(done.eps)
    for name, parts in (("sums", done.sums), ("per_draw", done.per_draw)):
        for i, part in enumerate(zip(*parts, strict=True)):  # per field: (batches, ...)
            arrays[f"{name}/{i}"] = np.stack(part)
    meta = {"fingerprint": mark, "batches": len(done.sums), "timings": done.timings}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, allow_pickle=False, **arrays)
    os.replace(tmp, path)


def load_progress(path: Path, mark: str, like_states) -> Progress | None:
    """The progress saved at path (None if there is no file); InputError if another run wrote it or
    it cannot be read."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as f:
            meta = json.loads(f["meta"].tobytes())
            leaves, tree = jax.tree.flatten(like_states)
            saved = [f[f"state/{i}"] for i in range(len(leaves))]
            fields = {name: sum(k.startswith(f"{name}/") for k in f.files) for name in ("sums", "per_draw")}
            stacked = {name: [f[f"{name}/{i}"] for i in range(n)] for name, n in fields.items()}
            eps = f["eps"]
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise InputError(
            f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); delete it"
        ) from None
    if meta["fingerprint"] != mark or any(
        a.shape != b.shape or a.dtype != b.dtype for a, b in zip(saved, leaves, strict=True)
    ):
        raise InputError(
            f"checkpoint {path} was written by another run (network, sampler, chains, key, data or "
            "versions differ): delete it or pass another path"
        )
    n = meta["batches"]
    per_batch = {name: [tuple(s[b] for s in arrays) for b in range(n)] for name, arrays in stacked.items()}
    states = jax.tree.unflatten(tree, saved)
    return Progress(states, eps, per_batch["sums"], per_batch["per_draw"], meta["timings"])
