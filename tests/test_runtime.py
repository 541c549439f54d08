"""The XLA thread setting that keeps jaxlib < 0.11.2's batched LAPACK calls from deadlocking, and the
promise that importing the package changes nothing but x64."""

import os
import subprocess
import sys

import pytest

from critical_kernels.runtime import needs_one_xla_thread

# Four independent vmapped Cholesky + triangular-solve gradients inside one compiled loop, with XLA's
# concurrency-optimised schedule: with JAX's own factorisations and jaxlib 0.10.2's default 2-thread
# pool this hangs at 0 % CPU on a 2-core machine (every run tried); {chol} and {solve} choose them.
_BATCHED_LAPACK = """
import critical_kernels
{setup}
from functools import partial
import jax, jax.numpy as jnp
from critical_kernels import linalg
def logp(u, S):
    L = {chol}(S + jnp.outer(u, u))
    z = {solve}(L, u)
    return -0.5 * z @ z - jnp.log(jnp.diag(L)).sum()
grad = jax.vmap(jax.grad(logp), in_axes=(0, None))
A = jax.random.normal(jax.random.PRNGKey(0), (4, 60, 60))
Ss = list(A @ A.mT / 60 + jnp.eye(60))
us = tuple(jax.random.normal(jax.random.PRNGKey(i), (8, 60)) for i in range(4))
body = lambda i, us: tuple(u + 1e-6 * grad(u, S) for u, S in zip(us, Ss))
jax.block_until_ready(jax.jit(lambda us: jax.lax.fori_loop(0, 300, body, us))(us))
print("finished")
"""
OURS = dict(chol="linalg.cholesky", solve="linalg.solve_lower")
JAXS = dict(chol="jnp.linalg.cholesky", solve="partial(jax.scipy.linalg.solve_triangular, lower=True)")
_CONCURRENT = "--xla_cpu_enable_concurrency_optimized_scheduler=true"
_OLD_JAXLIB = pytest.mark.skipif(not needs_one_xla_thread(), reason="jaxlib >= 0.11.2: nothing to set")


def _python(code: str, timeout: float = 120, **env_vars):
    """Run `code` in a fresh interpreter without PJRT_NPROC (the test process's own environment
    carries the setting), plus `env_vars`."""
    env = {k: v for k, v in os.environ.items() if k != "PJRT_NPROC"} | env_vars
    args = [sys.executable, "-W", "always", "-c", code]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def test_the_package_factorisations_do_not_deadlock_with_the_default_pool():
    # linalg.py loops over the batch: XLA's default pool, no setting; a hang raises TimeoutExpired
    result = _python(_BATCHED_LAPACK.format(setup="", **OURS), XLA_FLAGS=_CONCURRENT)
    assert result.returncode == 0 and "finished" in result.stdout, result.stderr


@pytest.mark.slow  # use_one_xla_thread is no longer needed by the package itself
def test_use_one_xla_thread_keeps_jax_own_batched_lapack_from_deadlocking():
    code = _BATCHED_LAPACK.format(setup="critical_kernels.use_one_xla_thread()", **JAXS)
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


def test_the_command_line_leaves_the_pool_alone():
    code = (
        "import os, sys; from critical_kernels.cli import main\n"
        "sys.argv = ['critical-kernels', '--version']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\nprint(os.environ.get('PJRT_NPROC'))"
    )
    assert _python(code).stdout.split()[-1] == "None"


@pytest.mark.slow  # a minute and a half of subprocess; the fast tier keeps the reproducer above
def test_estimators_warn_about_nothing_and_finish_with_the_default_pool():
    """Chains, tempered SMC particles, reweighted networks (vmapped Cholesky and triangular solves)
    and a sweep with XLA's default pool and no setting: no warning, and they finish (a hang:
    TimeoutExpired)."""
    code = (
        "import critical_kernels as ck, warnings\n"
        "warnings.simplefilter('error')\n"
        "d = ck.datasets.xor(n_train=10, n_test=4, dim=4, seed=0)\n"
        "spec = ck.NetworkSpec(depth=2, width=20, activation='erf', g_w=1.5, g_b=0.1)\n"
        "chains = ck.Chains(chains=4, warmup=50, n_samples=100, thin=5, n_batches=4)\n"
        "for space in ('weights', 'preactivation'):\n"
        "    ck.sample_posterior(spec, d.X, d.Y, d.X_test, sampler=ck.HMC(space=space), chains=chains,"
        " throw=False)\n"
        "smc = ck.TemperedSMC(n_particles=16, n_runs=2, n_mcmc=2, n_final=2, n_w=32, always=True)\n"
        "fixed = dict(rtol=None, n_samples=64, n_w=64)\n"
        "ck.reweighted_kernels(spec, d.X, d.Y, options=ck.Reweighting(**fixed, tempering=smc), throw=False)\n"
        "plain = ck.Reweighting(**fixed, tempering=None)\n"
        "ck.reweighted_kernels(spec, d.X, d.Y, options=plain, throw=False)\n"
        "from critical_kernels.experiments import Serial, load_sweep, run_sweep\n"
        "import tempfile, pathlib\n"
        "tmp = pathlib.Path(tempfile.mkdtemp())\n"
        "(tmp / 's.toml').write_text('[data]\\ntask = \"xor\"\\nn_train = 8\\nn_test = 4\\ndim = 3\\n"
        "[network]\\nwidth = 20\\n[methods]\\nmap = false\\nreweighted = true\\n"
        "[methods.reweighting]\\nn_samples = 64\\nn_w = 64\\n"
        '[sweep]\\n"network.depth" = [1, 2]\\n\')\n'
        "ds = run_sweep(load_sweep(tmp / 's.toml'), tmp / 'out', executor=Serial())\n"
        "assert list(ds.status.values) == ['ok', 'ok'], ds.error.values\n"
        "print('finished')"
    )
    result = _python(code, timeout=300, XLA_FLAGS=_CONCURRENT)
    assert result.returncode == 0 and result.stdout.split()[-1] == "finished", result.stderr[-2000:]


@pytest.mark.slow
def test_tempered_smc_on_unstandardised_xor_finishes_with_the_default_pool():
    """The case that hung at 0 % CPU in 0.5.0 without use_one_xla_thread(): reweighted_kernels on
    unstandardised XOR, P = 30, N = 100, L = 2, erf (plain reweighting's ESS collapses, so it moves to
    tempered SMC)."""
    code = (
        "import critical_kernels as ck\n"
        "d = ck.datasets.xor(n_train=30, n_test=0, dim=10, seed=0, standardise=False)\n"
        "spec = ck.NetworkSpec(depth=2, width=100, activation='erf', g_w=1.5, g_b=0.1, kappa=0.1)\n"
        "est = ck.reweighted_kernels(spec, d.X, d.Y, throw=False)\n"
        "print(est.method.label, est.result.name)"
    )
    result = _python(code, timeout=1500, XLA_FLAGS=_CONCURRENT)
    assert result.returncode == 0 and "tempered SMC" in result.stdout, result.stderr[-2000:]


def test_warnings_name_the_users_line_not_the_package():
    import warnings

    import critical_kernels as ck

    data = ck.datasets.xor(n_train=8, n_test=0)
    spec = ck.NetworkSpec(depth=2, width=50, activation="erf")
    options = ck.MonteCarlo(n_samples=64, n_batches=4, rtol=1e-9, max_samples=128)  # cannot be met
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ck.perturbative_kernels(spec, data.X, data.Y, options=options)
    ours = [w for w in caught if "rtol" in str(w.message)]
    assert ours and all(w.filename == __file__ for w in ours), [(w.filename, w.lineno) for w in caught]
