"""The XLA thread setting that keeps jaxlib < 0.11.2's batched LAPACK calls from deadlocking, and the
promise that importing the package changes nothing but x64."""

import os
import subprocess
import sys

import pytest

from critical_kernels.runtime import needs_one_xla_thread

# Four independent vmapped Cholesky + triangular-solve gradients inside one compiled loop, with XLA's
# concurrency-optimised schedule: on a 2-core machine jaxlib 0.10.2's default 2-thread pool hangs at
# 0 % CPU (every run tried); with one pool thread it takes ~2 s.
_BATCHED_LAPACK = """
import critical_kernels
{setup}
import jax, jax.numpy as jnp
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
_OLD_JAXLIB = pytest.mark.skipif(not needs_one_xla_thread(), reason="jaxlib >= 0.11.2: nothing to set")


def _python(code: str, timeout: float = 120, **env_vars):
    """Run `code` in a fresh interpreter without PJRT_NPROC (the test process's own environment
    carries the setting), plus `env_vars`."""
    env = {k: v for k, v in os.environ.items() if k != "PJRT_NPROC"} | env_vars
    args = [sys.executable, "-W", "always", "-c", code]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def test_use_one_xla_thread_keeps_batched_lapack_from_deadlocking():
    # a hang raises TimeoutExpired after 120 s
    code = _BATCHED_LAPACK.format(setup="critical_kernels.use_one_xla_thread()")
    result = _python(code, XLA_FLAGS=_CONCURRENT)
    assert result.returncode == 0 and "finished" in result.stdout, result.stderr


def test_importing_the_package_sets_x64_and_nothing_else():
    code = (
        "import os, jax; before = dict(os.environ); import critical_kernels; "
        "print(jax.config.jax_enable_x64, os.environ.get('PJRT_NPROC'), dict(os.environ) == before)"
    )
    assert _python(code).stdout.split() == ["True", "None", "True"]


def test_a_user_choice_of_the_pool_size_is_kept_and_nproc_is_not_one():
    code = "import critical_kernels as ck, os; ck.use_one_xla_thread(); print(os.environ.get('PJRT_NPROC'))"
    assert _python(code, PJRT_NPROC="2").stdout.strip() == "2"
    # NPROC is often exported for other tools; PJRT_NPROC takes precedence over it in XLA
    expected = "1" if needs_one_xla_thread() else "None"
    assert _python(code, NPROC="8").stdout.strip() == expected


def test_the_command_line_applies_the_setting():
    code = (
        "import os, sys; from critical_kernels.cli import main\n"
        "sys.argv = ['critical-kernels', '--version']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\nprint(os.environ.get('PJRT_NPROC'))"
    )
    assert _python(code).stdout.split()[-1] == ("1" if needs_one_xla_thread() else "None")


@_OLD_JAXLIB
def test_an_estimator_without_the_setting_warns_once():
    code = (
        "import critical_kernels as ck, warnings\n"
        "d = ck.datasets.xor(n_train=4, n_test=0, dim=3, seed=0)\n"
        "spec = ck.NetworkSpec(depth=1, width=5, activation='linear', g_b=0.1)\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    warnings.simplefilter('always')\n"
        "    for _ in range(2):\n"
        "        ck.linear_posterior_kernels(spec, d.X, d.Y)\n"
        "print(sum('use_one_xla_thread' in str(w.message) for w in seen))"
    )
    result = _python(code)
    assert result.stdout.split()[-1] == "1", result.stderr
