"""Loop-batched factorisations (linalg.py) against JAX's own: values, reverse-mode derivatives,
under vmap and grad of vmap, to rounding."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import critical_kernels as ck
from critical_kernels import linalg


def _spd(key, n, batch=()):
    A = jax.random.normal(key, (*batch, n, n))
    return A @ A.mT / n + jnp.eye(n)


def _logp(chol, solve, logdet):
    """A Gaussian log density whose covariance depends on u: every factorisation under grad."""

    def logp(u, S):
        C = S + jnp.outer(u, u) + jnp.diag(u**2)
        L = chol(C)
        z = solve(L, u)
        w = solve(L, jnp.stack([u, jnp.sin(u)], axis=1))
        return -0.5 * z @ z - jnp.log(jnp.diag(L)).sum() + w.sum() + logdet(C)

    return logp


OURS = _logp(linalg.cholesky, linalg.solve_lower, linalg.logdet_pd)
JAXS = _logp(
    jnp.linalg.cholesky,
    lambda L, b: jax.scipy.linalg.solve_triangular(L, b, lower=True),
    lambda C: jnp.linalg.slogdet(C)[1],
)


def test_values_and_gradients_equal_jax_under_vmap():
    S = _spd(jax.random.PRNGKey(0), 7)
    u = jax.random.normal(jax.random.PRNGKey(1), (5, 7))
    np.testing.assert_allclose(jax.vmap(OURS, (0, None))(u, S), jax.vmap(JAXS, (0, None))(u, S), rtol=1e-12)
    # d/du and d/dS: the Cholesky and triangular-solve VJPs
    ours = jax.vmap(jax.grad(OURS, (0, 1)), (0, None))(u, S)
    ref = jax.vmap(jax.grad(JAXS, (0, 1)), (0, None))(u, S)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_transposed_solve_and_cho_solve_equal_scipy():
    A = _spd(jax.random.PRNGKey(2), 6, (3,))
    B = jax.random.normal(jax.random.PRNGKey(3), (3, 6, 2))
    L = jax.vmap(linalg.cholesky)(A)
    np.testing.assert_allclose(L, np.linalg.cholesky(np.asarray(A)), rtol=1e-12)
    np.testing.assert_allclose(jax.vmap(linalg.cho_solve)(L, B), np.linalg.solve(A, B), rtol=1e-10)
    f = lambda L, B: (linalg.solve_lower_transposed(L, B) ** 2).sum()  # noqa: E731
    g = lambda L, B: (jax.scipy.linalg.solve_triangular(L, B, lower=True, trans=1) ** 2).sum()  # noqa: E731
    for argnum in (0, 1):
        ours = jax.vmap(jax.grad(f, argnum))(L, B)
        ref = jax.vmap(jax.grad(g, argnum))(L, B)
        if argnum == 0:  # only the lower triangle of L is read
            ours, ref = jnp.tril(ours), jnp.tril(ref)
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fn", ["eigh", "qr"])
def test_eigh_and_qr_equal_jax_under_vmap(fn):
    A = _spd(jax.random.PRNGKey(4), 5, (4,))
    ours, ref = jax.vmap(getattr(linalg, fn))(A), {"eigh": jnp.linalg.eigh, "qr": jnp.linalg.qr}[fn](A)
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jnp.abs(ours[1]), jnp.abs(ref[1]), rtol=1e-10, atol=1e-12)  # up to signs


def _lapack_ranks(f, *args) -> list[int]:
    """The ranks of the results of every LAPACK custom call in the compiled program of f."""
    text = jax.jit(f).lower(*args).compile().as_text()
    calls = [line for line in text.splitlines() if 'custom_call_target="lapack_' in line]
    return [len(re.search(r"f64\[([\d,]*)\]", line.split("=", 1)[1])[1].split(",")) for line in calls]


def test_no_batched_lapack_call_is_compiled():
    """Under vmap, the factorisations compile to a loop over the batch: no LAPACK call sees a batch
    dimension (the jaxlib < 0.11.2 deadlock needs one), while JAX's own are batched (rank 3)."""
    S = _spd(jax.random.PRNGKey(0), 7)
    u = jax.random.normal(jax.random.PRNGKey(1), (5, 7))
    ours = _lapack_ranks(jax.vmap(jax.grad(OURS), (0, None)), u, S)
    assert ours and max(ours) == 2
    assert max(_lapack_ranks(jax.vmap(jax.grad(JAXS), (0, None)), u, S)) == 3


def test_the_pre_activation_sampler_compiles_no_batched_lapack_call():
    """The posterior gradient of four chains as the sampler runs it (vmap over chains) in the
    pre-activation space (T19: a Cholesky factor per layer, the readout's log evidence); with JAX's
    own Cholesky it holds rank-3 (batched) calls. (Weight space has no factorisation.)"""
    from critical_kernels.estimators import Preactivation

    X = jax.random.normal(jax.random.PRNGKey(0), (12, 5))
    Y = jnp.sign(X[:, :1])
    spec = ck.NetworkSpec(depth=2, width=16, activation="erf", g_w=1.5, g_b=0.1)
    model = Preactivation(spec, 5, 12)
    u = jax.random.normal(jax.random.PRNGKey(1), (4, model.dim))
    grad = jax.vmap(jax.grad(model.log_density), (0, None, None))
    ranks = _lapack_ranks(grad, u, X, Y)
    assert ranks and max(ranks) == 2, ranks
