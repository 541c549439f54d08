"""The process-wide JAX settings the package uses, and when each is applied.

- float64: `import critical_kernels` switches JAX to x64 (`jax.config.update("jax_enable_x64", True)`,
  the public API; DESIGN: Numerics). It is the only thing the import changes.
- One XLA CPU thread on jaxlib < 0.11.2 (`use_one_xla_thread`): applied by the package's own entry
  points, the `critical-kernels` command and the worker processes of a sweep, never by the import.
  In your own scripts call `critical_kernels.use_one_xla_thread()` before JAX's first computation.
"""

from __future__ import annotations

import os
import warnings
from importlib import metadata

THREADS_VARIABLE = "PJRT_NPROC"  # XLA's CPU client: intra-op pool size (read when the backend starts)
FIXED_IN = (0, 11, 2)  # the first jaxlib whose batched LAPACK calls no longer wait on pool threads
_warned = False


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
    at 0 % CPU. With one pool thread jaxlib runs the batch inline. The price: weight-space gradients
    up to 1.9x slower on 2 cores (benchmarks/xla_threads.py); parallel work goes to processes instead.

    Takes effect only before JAX's first computation in the process (XLA reads the variable when its
    CPU backend starts). A PJRT_NPROC you set yourself is kept. Returns whether PJRT_NPROC is now 1.

    Example:
      >>> import critical_kernels as ck
      >>> ck.use_one_xla_thread()  # first thing in a script, before any JAX computation
    """
    if THREADS_VARIABLE not in os.environ and needs_one_xla_thread():
        os.environ[THREADS_VARIABLE] = "1"
    return os.environ.get(THREADS_VARIABLE) == "1"


def warn_if_threads_unset() -> None:
    """Once per process: warn when jaxlib < 0.11.2 runs with XLA's default pool (no PJRT_NPROC)."""
    global _warned
    if _warned or THREADS_VARIABLE in os.environ or not needs_one_xla_thread():
        return
    _warned = True
    warnings.warn(
        "jaxlib < 0.11.2 with XLA's default CPU thread pool: batched Cholesky / triangular solves "
        "(samplers, reweighting, SMC) can deadlock. Call critical_kernels.use_one_xla_thread() before "
        "JAX's first computation (the critical-kernels command does), or set PJRT_NPROC=1.",
        RuntimeWarning,
        stacklevel=3,
    )
