"""The process-wide XLA setting that keeps jaxlib < 0.11.2's batched LAPACK calls from deadlocking."""

import os
import subprocess
import sys

import pytest
from jax._src import lib as jaxlib

# Four independent vmapped Cholesky + triangular-solve gradients inside one compiled loop, with XLA's
# concurrency-optimised schedule: on a 2-core machine jaxlib 0.10.2's default 2-thread pool hangs at
# 0 % CPU (every run tried); with the package's one pool thread it takes ~2 s.
_BATCHED_LAPACK = """
import {first}
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
def logp(u, S):
    L = jnp.linalg.cholesky(S + jnp.outer(u, u))
    z = jax.scipy.linalg.solve_triangular(L, u, lower=True)
    return -0.5 * z @ z - jnp.log(jnp.diag(L)).sum()
grad = jax.vmap(jax.grad(logp), in_axes=(0, None))
A = jax.random.normal(jax.random.PRNGKey(0), (4, 60, 60))
Ss = list(A @ A.mT / 60 + jnp.eye(60))
us = tuple(jax.random.normal(jax.random.PRNGKey(i), (8, 60)) for i in range(4))
body = lambda i, us: tuple(u + 1e-6 * grad(u, S) for u, S in zip(us, Ss))
jax.block_until_ready(jax.jit(lambda us: jax.lax.fori_loop(0, 300, body, us))(us))
print("finished")
"""
_CONCURRENT = "--xla_cpu_enable_concurrency_optimized_scheduler=true"


def _python(code: str, timeout: float = 120, **env_vars):
    """Run `code` in a fresh interpreter without PJRT_NPROC (the test process's own environment
    already carries the package's setting), plus `env_vars`."""
    env = {k: v for k, v in os.environ.items() if k != "PJRT_NPROC"} | env_vars
    args = [sys.executable, "-W", "always", "-c", code]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def test_importing_the_package_keeps_batched_lapack_from_deadlocking():
    # a hang raises TimeoutExpired after 120 s
    result = _python(_BATCHED_LAPACK.format(first="critical_kernels"), XLA_FLAGS=_CONCURRENT)
    assert result.returncode == 0 and "finished" in result.stdout, result.stderr


def test_a_user_choice_of_the_pool_size_is_kept_and_nproc_is_not_one():
    code = "import critical_kernels, os; print(os.environ.get('PJRT_NPROC'))"
    assert _python(code, PJRT_NPROC="2").stdout.strip() == "2"
    # NPROC is often exported for other tools; PJRT_NPROC takes precedence over it in XLA
    expected = "None" if jaxlib.version >= (0, 11, 2) else "1"
    assert _python(code, NPROC="8").stdout.strip() == expected


@pytest.mark.skipif(jaxlib.version >= (0, 11, 2), reason="jaxlib >= 0.11.2: nothing to set")
def test_jax_used_before_the_import_warns():
    code = "import jax.numpy as jnp; jnp.ones(2).block_until_ready(); import critical_kernels"
    result = _python(code)
    assert result.returncode == 0 and "PJRT_NPROC=1 can no longer take effect" in result.stderr
