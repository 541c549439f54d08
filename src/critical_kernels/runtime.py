"""The process-wide JAX settings the package uses, and when each is applied.

- float64: `import critical_kernels` switches JAX to x64 (`jax.config.update("jax_enable_x64", True)`,
  the public API; DESIGN: Numerics). It is the only thing the import changes.
- The jaxlib < 0.11.2 batched-LAPACK deadlock needs no setting: every factorisation of the package
  runs one matrix at a time (linalg.py), with XLA's own thread pool. `use_one_xla_thread` remains for
  code of your own that vmaps JAX's factorisations, and for the worker processes of a sweep, where
  parallel work goes to processes (one XLA thread each).
"""

from __future__ import annotations

import os
from importlib import metadata

THREADS_VARIABLE = "PJRT_NPROC"  # XLA's CPU client: intra-op pool size (read when the backend starts)
FIXED_IN = (0, 11, 2)  # the first jaxlib whose batched LAPACK calls no longer wait on pool threads


def _jaxlib_version() -> tuple[int, ...]:
    parts = metadata.version("jaxlib").split(".")[:3]
    return tuple(int("".join(ch for ch in p if ch.isdigit()) or 0) for p in parts)


def needs_one_xla_thread() -> bool:
    """Whether this jaxlib can deadlock in batched LAPACK calls with more than one XLA thread."""
    return _jaxlib_version() < FIXED_IN


def use_one_xla_thread() -> bool:
    """Give XLA's CPU client one intra-op thread (PJRT_NPROC=1) where jaxlib < 0.11.2 needs it.

    jaxlib < 0.11.2 splits a batched LAPACK call (Cholesky, triangular solve: a vmap over chains,
    particles or networks) over XLA's CPU thread pool and waits for the pieces on a pool thread; when
    as many such calls run at once as the pool has threads, every thread waits and the process hangs
    at 0 % CPU. With one pool thread jaxlib runs the batch inline. The package's own calls need none
    of this (linalg.py runs each factorisation one matrix at a time); your own vmapped JAX
    factorisations may. The price: weight-space gradients up to 1.9x slower on 2 cores.

    Takes effect only before JAX's first computation in the process (XLA reads the variable when its
    CPU backend starts). A PJRT_NPROC you set yourself is kept. Returns whether PJRT_NPROC is now 1.

    Example:
      >>> import critical_kernels as ck
      >>> ck.use_one_xla_thread()  # doctest: +SKIP
    """
    if THREADS_VARIABLE not in os.environ and needs_one_xla_thread():
        os.environ[THREADS_VARIABLE] = "1"
    return os.environ.get(THREADS_VARIABLE) == "1"
