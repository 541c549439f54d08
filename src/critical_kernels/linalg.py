"""Dense linear algebra in JAX that cannot deadlock: every factorisation runs one matrix at a time.

jaxlib < 0.11.2 splits a *batched* LAPACK call (what `vmap` makes of a Cholesky, a triangular solve,
an eigendecomposition over chains, particles or networks) over XLA's CPU thread pool and waits for
the pieces on a pool thread; when as many such calls run at once as the pool has threads, every
thread waits and the process hangs at 0 % CPU. Here each such call is batched as a loop over the
batch (`jax.custom_batching.sequential_vmap`), so jaxlib never sees a batch and XLA keeps its threads.

Reverse-mode derivatives of a loop-batched call are not defined by JAX, so `cholesky` and
`solve_triangular` carry their own VJPs (custom_vjp), written with the same loop-batched calls.
Every JAX factorisation of the package goes through this module (tests/test_runtime.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_batching import sequential_vmap

_cholesky = sequential_vmap(lambda A: jnp.linalg.cholesky(A))


@sequential_vmap
def _solve_lower(L, B):
    return jax.scipy.linalg.solve_triangular(L, B, lower=True)


@sequential_vmap
def _solve_lower_transposed(L, B):
    """L^T X = B for lower-triangular L."""
    return jax.scipy.linalg.solve_triangular(L, B, lower=True, trans=1)


_eigh = sequential_vmap(lambda A: jnp.linalg.eigh(A))
_qr = sequential_vmap(lambda A: jnp.linalg.qr(A, mode="reduced"))
_solve = sequential_vmap(lambda A, B: jnp.linalg.solve(A, B))


def _batched(f, *args):
    """f over the leading axes of its (..., n, n) first argument (every argument batched alike), so
    the factorisations below only ever see one matrix."""
    if args[0].ndim == 2:
        return f(*args)
    return jax.vmap(lambda *a: _batched(f, *a))(*args)


def eigh(A):
    """Eigenvalues (ascending) and eigenvectors of symmetric A (..., n, n); forward-mode derivatives only."""
    return _batched(_eigh, A)


def qr(A):
    """Reduced QR of A (..., m, n); forward-mode derivatives only."""
    return _batched(_qr, A)


def solve(A, B):
    """X with A X = B for A (..., n, n) (LU); forward-mode derivatives only."""
    return _batched(_solve, A, B)


def cholesky(A):
    """Lower Cholesky factor of the symmetric part of A (..., n, n) (NaN where not positive definite)."""
    return _batched(_cholesky_vjp, A)


@jax.custom_vjp
def _cholesky_vjp(A):
    return _cholesky(A)


def _cholesky_fwd(A):
    L = _cholesky(A)
    return L, L


def _cholesky_bwd(L, L_bar):
    # dL = L Phi(L^-1 dA L^-T), Phi: lower triangle with the diagonal halved; its adjoint gives
    # A_bar = L^-T Phi(L^T L_bar) L^-1, symmetrised as the factor only sees (A + A^T) / 2
    P = L.T @ L_bar
    P = jnp.tril(P) - 0.5 * jnp.diag(jnp.diag(P))
    A_bar = _solve_lower_transposed(L, _solve_lower_transposed(L, P.T).T)
    return (0.5 * (A_bar + A_bar.T),)


_cholesky_vjp.defvjp(_cholesky_fwd, _cholesky_bwd)


def solve_lower(L, B):
    """X with L X = B for lower-triangular L (..., n, n); B (..., n) or (..., n, k), batched alike."""
    return _batched(_solve_lower_vjp, L, B)


@jax.custom_vjp
def _solve_lower_vjp(L, B):
    return _solve_lower(L, B)


def _solve_lower_fwd(L, B):
    X = _solve_lower(L, B)
    return X, (L, X)


def _solve_lower_bwd(residuals, X_bar):
    # X = L^-1 B: B_bar = L^-T X_bar, L_bar = -tril(B_bar X^T)
    L, X = residuals
    B_bar = _solve_lower_transposed(L, X_bar)
    outer = jnp.outer(B_bar, X) if X.ndim == 1 else B_bar @ X.T
    return -jnp.tril(outer), B_bar


_solve_lower_vjp.defvjp(_solve_lower_fwd, _solve_lower_bwd)


def cho_solve(L, B):
    """X with (L L^T) X = B, L the lower Cholesky factor."""
    return solve_lower_transposed(L, solve_lower(L, B))


def solve_lower_transposed(L, B):
    """X with L^T X = B for lower-triangular L (..., n, n); B batched alike."""
    return _batched(_transposed, L, B)


@jax.custom_vjp
def _transposed(L, B):
    return _solve_lower_transposed(L, B)


def _transposed_fwd(L, B):
    X = _solve_lower_transposed(L, B)
    return X, (L, X)


def _transposed_bwd(residuals, X_bar):
    # X = L^-T B: B_bar = L^-1 X_bar, L_bar = -tril(X B_bar^T)
    L, X = residuals
    B_bar = _solve_lower(L, X_bar)
    outer = jnp.outer(X, B_bar) if X.ndim == 1 else X @ B_bar.T
    return -jnp.tril(outer), B_bar


_transposed.defvjp(_transposed_fwd, _transposed_bwd)


def logdet_pd(A):
    """ln det A of symmetric positive-definite A (..., n, n) from its Cholesky factor (NaN where it is
    not positive definite)."""
    return 2.0 * jnp.log(jnp.diagonal(cholesky(A), axis1=-2, axis2=-1)).sum(axis=-1)
