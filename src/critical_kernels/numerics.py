"""Input checks and stable linear algebra: Cholesky with recorded escalating jitter."""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import threadpoolctl

from . import linalg
from .errors import InputError, NotPositiveDefiniteError


def as_array(name: str, value, ndim: int | tuple[int, ...]) -> np.ndarray:
    """float64 NumPy copy of `value`, checked for dimension and finiteness."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected a numeric array, got {type(value).__name__}") from None
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in allowed:
        raise InputError(f"{name}: expected {' or '.join(map(str, allowed))}-D, got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{name}: is empty (shape {arr.shape})")
    bad = ~np.isfinite(arr)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(f"{name}: contains {int(bad.sum())} NaN/inf values (first at {where})")
    return arr


def check_inputs(X, X_test=None) -> np.ndarray:
    """Stack training inputs (P, d) and optional test inputs (P_test, d) into one array."""
    X = as_array("X", X, 2)
    if X_test is None:
        return X
    X_test = as_array("X_test", X_test, 2)
    if X_test.shape[1] != X.shape[1]:
        raise InputError(f"X_test: has {X_test.shape[1]} features but X has {X.shape[1]}")
    return np.concatenate([X, X_test])


def check_targets(Y, n_train: int, n_out: int | None = None) -> np.ndarray:
    """Targets as (P, D); a 1-D vector becomes one output column."""
    Y = as_array("Y", Y, (1, 2))
    Y = Y[:, None] if Y.ndim == 1 else Y
    if Y.shape[0] != n_train:
        raise InputError(f"Y: has {Y.shape[0]} rows but X has {n_train} training inputs")
    if n_out is not None and Y.shape[1] != n_out:
        raise InputError(f"Y: has {Y.shape[1]} columns but the spec has n_out = {n_out}")
    return Y


def check_kernel(name: str, K) -> np.ndarray:
    """A square, symmetric, finite kernel matrix."""
    K = as_array(name, K, 2)
    if K.shape[0] != K.shape[1]:
        raise InputError(f"{name}: must be square, got shape {K.shape}")
    scale = np.max(np.abs(K)) or 1.0
    if np.max(np.abs(K - K.T)) > 1e-8 * scale:
        raise InputError(f"{name}: must be symmetric (max asymmetry {np.max(np.abs(K - K.T)):.3g})")
    return K


SE_KINDS = ("batches", "jackknife", "replicas")


def check_se_kind(kind: str) -> None:
    """InputError unless `kind` names a standard-error formula (SE_KINDS)."""
    if kind not in SE_KINDS:
        raise InputError(f"kind: must be one of {', '.join(SE_KINDS)}, got {kind!r}")


def standard_error(estimates, kind: str) -> np.ndarray:
    """Standard error of an estimate from B estimates (B, ...) along the first axis: the one SE formula.

    kind "batches": i.i.d. block estimates whose mean is the estimate, SE = s / sqrt(B);
    "jackknife": leave-one-batch-out estimates, SE = sqrt((B - 1)/B sum_b (x_b - mean)^2) = s (B - 1)/sqrt(B);
    "replicas": independent full estimates, the estimate one of them, SE = s; with s the spread (ddof 1).
    NaN propagates (a failed replica leaves its entries unknown).
    """
    check_se_kind(kind)
    x = np.asarray(estimates, dtype=float)
    B = x.shape[0]
    scale = {"batches": 1 / np.sqrt(B), "jackknife": (B - 1) / np.sqrt(B), "replicas": 1.0}[kind]
    return x.std(axis=0, ddof=1) * scale


def ratio_jackknife(sw, swx) -> tuple[np.ndarray, np.ndarray]:
    """A self-normalised estimate sum w x / sum w and its delete-one-block estimates (B, ...) from
    per-block sums sw (B,) and swx (B, ...) on one weight scale (kind "jackknife"); NaN where one block
    holds all the weight."""
    sw, swx = np.asarray(sw), np.asarray(swx)
    total = swx.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        loo = (total[None] - swx) / (sw.sum() - sw).reshape((-1,) + (1,) * (swx.ndim - 1))
    return total / sw.sum(), loo


def as_key(key) -> jax.Array:
    """A PRNG key from an int or a key."""
    return jax.random.PRNGKey(key) if isinstance(key, (int, np.integer)) else key


def psd_sqrt(C) -> jnp.ndarray:
    """Symmetric square root of a PSD matrix (eigenvalues clipped at 0): h = z @ sqrt(C)."""
    w, U = linalg.eigh(symmetrize(C))
    return (U * jnp.sqrt(jnp.clip(w, 0.0, None))) @ U.T


def symmetrize(A):
    """(A + A^T) / 2 over the last two axes."""
    return 0.5 * (A + jnp.swapaxes(A, -1, -2))


def clip_corr(r):
    """Clip correlations into [-1, 1] before arcsin / arccos."""
    return jnp.clip(r, -1.0, 1.0)


def _arcsin_series_coefficients(degree: int = 14) -> np.ndarray:
    """Monomial coefficients of R(z) = (arcsin(sqrt z)/sqrt z - 1)/z on [0, 1/4].

    Chebyshev interpolation; R is analytic up to z = 1, so degree 14 reaches double precision
    (max error of the resulting arcsin on [-1, 1]: 4.4e-16, checked in the tests).
    """

    def remainder(z):
        root = np.sqrt(z)
        series = 1 / 6 + z * (3 / 40 + z * 15 / 336)  # Taylor terms, for z -> 0
        with np.errstate(invalid="ignore", divide="ignore"):
            exact = (np.arcsin(root) / root - 1.0) / z
        return np.where(z < 1e-4, series, exact)

    cheb = np.polynomial.Chebyshev.interpolate(remainder, degree, domain=[0.0, 0.25])
    return cheb.convert(kind=np.polynomial.Polynomial).coef


_ARCSIN_COEF = tuple(float(c) for c in _arcsin_series_coefficients()[::-1])


def arcsin(x):
    """arcsin of float64 x in [-1, 1] from mul/add/sqrt only (XLA's own is ~4x slower on CPU).

    |x| <= 1/2: x + x^3 R(x^2); |x| > 1/2: pi/2 - 2 arcsin(sqrt((1 - |x|)/2)).
    """
    big = jnp.abs(x) > 0.5
    t = jnp.where(big, jnp.sqrt(0.5 * (1.0 - jnp.where(big, jnp.abs(x), 0.0))), x)
    z = t * t
    r = _ARCSIN_COEF[0]
    for c in _ARCSIN_COEF[1:]:
        r = r * z + c
    a = t + t * z * r
    return jnp.where(big, jnp.sign(x) * (0.5 * np.pi - 2.0 * a), a)


def arccos(x):
    """arccos(x) = pi/2 - arcsin(x) for float64 x in [-1, 1]."""
    return 0.5 * np.pi - arcsin(x)


class Cholesky(NamedTuple):
    """Lower Cholesky factor of A + jitter * I, with the jitter that was needed."""

    factor: np.ndarray
    jitter: float


def psd_cholesky(A, name: str = "kernel", rel_jitter: float = 1e-12, max_tries: int = 6) -> Cholesky:
    """Cholesky factor with escalating jitter relative to the mean diagonal, recorded.

    Tries jitter 0, then rel_jitter * mean(diag) * 10^k for k = 0..max_tries-1; raises
    NotPositiveDefiniteError naming `name` when even the largest fails.
    """
    A = check_kernel(name, A)
    scale = float(np.mean(np.diag(A)))
    if not scale > 0:
        raise NotPositiveDefiniteError(f"{name}: mean diagonal is {scale:.3g}; a kernel needs > 0")
    eye, jitter = np.eye(A.shape[0]), 0.0
    for jitter in [0.0] + [rel_jitter * scale * 10.0**k for k in range(max_tries)]:
        try:
            return Cholesky(np.linalg.cholesky(A + jitter * eye), jitter)
        except np.linalg.LinAlgError:
            continue
    raise NotPositiveDefiniteError(
        f"{name}: not positive definite even with jitter {jitter:.3g}; "
        "check for duplicate inputs or increase kappa"
    )


def cho_solve(chol: Cholesky, B):
    """Solve (A + jitter I) X = B from a Cholesky factor."""
    return scipy.linalg.cho_solve((chol.factor, True), B)


def logdet(chol: Cholesky) -> float:
    """log det (A + jitter I) from its Cholesky factor."""
    return 2.0 * float(np.sum(np.log(np.diag(chol.factor))))


BLAS_THREADS_VARIABLE = "CRITICAL_KERNELS_BLAS_THREADS"
_controller = None


def blas_threads() -> int:
    """BLAS/LAPACK threads the compute entry points use: 1 unless CRITICAL_KERNELS_BLAS_THREADS says.

    Measured on the 2-core machine: a 300 x 300 Cholesky takes ~480 ms with 2 OpenBLAS threads and
    ~1.5 ms with 1 (JAX's CPU eigh/cholesky call the same library), and the hot paths are batched
    matrix products that XLA threads itself, so one BLAS thread is never slower here.
    """
    value = os.environ.get(BLAS_THREADS_VARIABLE, "1")
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise InputError(f"{BLAS_THREADS_VARIABLE}: must be a positive integer, got {value!r}")
    return threads


def limit_blas_threads(fn):
    """Run `fn` with blas_threads() BLAS/LAPACK threads (threadpoolctl); the caller's setting is
    restored afterwards. Every compute entry point has it."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _controller
        if _controller is None:  # built on first use, when NumPy's and SciPy's BLAS are loaded
            _controller = threadpoolctl.ThreadpoolController()
        with _controller.limit(limits=blas_threads(), user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper
