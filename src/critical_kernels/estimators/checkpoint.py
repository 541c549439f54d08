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
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

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


def fingerprint(spec, sampler, chains, key, X, Y) -> str:
    """A hash of everything the draws depend on (not the progress bar, nor the file itself)."""
    schedule = {k: v for k, v in as_dict(chains).items() if k not in ("progress", "checkpoint")}
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    key_data = np.asarray(jax.random.key_data(key) if typed else key)
    h = hashlib.sha256()
    for part in (repr(spec), type(sampler).__name__, json.dumps(as_dict(sampler), sort_keys=True)):
        h.update(part.encode())
    h.update(json.dumps(schedule, sort_keys=True).encode())
    for array in (key_data, np.asarray(X, np.float64), np.asarray(Y, np.float64)):
        h.update(str(array.shape).encode() + np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


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
    """The progress saved at path (None if there is no file); InputError if another run wrote it."""
    if not path.is_file():
        return None
    with np.load(path) as f:
        meta = json.loads(f["meta"].tobytes())
        if meta["fingerprint"] != mark:
            raise InputError(
                f"checkpoint {path} was written by another run (network, sampler, chains, key or data "
                "differ): delete it or pass another path"
            )
        leaves, tree = jax.tree.flatten(like_states)
        states = jax.tree.unflatten(tree, [f[f"state/{i}"] for i in range(len(leaves))])
        n = meta["batches"]

        def unstack(name: str) -> list:
            stacked = [f[f"{name}/{i}"] for i in range(sum(k.startswith(f"{name}/") for k in f.files))]
            return [tuple(s[b] for s in stacked) for b in range(n)]

        return Progress(states, f["eps"], unstack("sums"), unstack("per_draw"), meta["timings"])
