"""First-order (field-theory) adaptation of the kernels of all layers (T13-T15)."""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import linalg
from ..errors import warn_user
from ..fluctuations import kernel_covariance
from ..likelihood import likelihood_gradient, output_cholesky, predictive_moments
from ..metrics import cka_layers, cka_layers_se, se_target
from ..numerics import as_key, cho_solve, limit_blas_threads
from ..predictive import Predictive
from ..spec import NetworkSpec
from .base import Estimates, KernelEstimate, Outcome, finish, prepare, warn_jitter
from .options import ClosedForm, MonteCarlo


class PerturbativeInfo(NamedTuple):
    """conj_kernels: (L+1, P', P') first-order conjugate kernels C~(l) = J_{L<-l}^T[G]/N (index 0
    unused, zero on test rows); n_samples: Monte Carlo samples of V used in all (T5; unused for
    linear phi); n_batches; jitter: Cholesky jitter of K; timings: {"total": wall seconds}; rtol_met:
    whether the CKA-adaptation tolerance was met (None without one or for linear phi). The n_batches i.i.d.
    block estimates behind the SE are KernelEstimate.estimates (kind "batches")."""

    conj_kernels: np.ndarray
    n_samples: int
    n_batches: int
    jitter: float
    timings: dict
    rtol_met: bool | None = None


@limit_blas_threads
def perturbative_kernels(
    spec: NetworkSpec, X, Y, X_test=None, *, options: MonteCarlo = MonteCarlo(), key=0, throw: bool = True
) -> KernelEstimate:
    """First-order MAP / field-theory kernels of every layer (T13-T14).

    delta C(l) = (1/N) sum_{k <= l} J_{l<-k} V(k) J_{L<-k}^T [G], G = (1/2)(K^-1 YY^T K^-1 - D K^-1) at
    the NNGP output kernel (zero on test rows: they adapt only through the layers below).

    Args:
      spec: network; X: (P, d); Y: (P,) or (P, D); X_test: optional (P_test, d).
      options: MonteCarlo(n_samples, n_batches, rtol, max_samples) for V (T5); exact for linear phi.
      key: int or PRNGKey of the common random numbers; throw: raise on failure (default).

    Returns:
      KernelEstimate "perturbative": kernels (L+1, P', P'), method "Monte Carlo" with se and
      estimates from the n_batches blocks of common random numbers, or "closed form" for linear phi
      (V exact: se and estimates None); info PerturbativeInfo; with test rows the first-order
      predictive (T22), not the kernel predictor at these kernels.

    Example:
      >>> import critical_kernels as ck
      >>> data = ck.datasets.xor(n_train=10, n_test=0)
      >>> spec = ck.NetworkSpec(depth=2, width=50, activation="linear", g_b=0.1)
      >>> est = perturbative_kernels(spec, data.X, data.Y)
      >>> cka = ck.cka_layers(est.kernels, data.Y)  # CKA of every layer with the targets
      >>> bool(cka[-1] > ck.cka(ck.nngp_kernels(spec, data.X)[-1], data.Y))  # finite N aligns the kernel
      True
    """
    start = time.perf_counter()
    problem = prepare(spec, X, Y, X_test, options=(options, MonteCarlo))
    cov = kernel_covariance(spec, problem.X_all, key=key, n_samples=options.n_samples)
    P, Y = problem.P, problem.Y
    G = np.zeros(cov.kernels.shape[1:])
    grad = likelihood_gradient(np.asarray(cov.kernels[-1])[:P, :P], Y, spec.kappa)
    warn_jitter("perturbative", grad.jitter)
    G[:P, :P] = grad.G
    back = cov.pullback(G)  # C~(l) = J_{L<-l}^T [G] / N (T13)
    conj = _conjugate_kernels(back, spec, G.shape)
    if cov.phi is None:  # linear phi: V exact
        shift = np.asarray(jnp.stack(cov.push_forward(back)))
        info = PerturbativeInfo(conj, 0, 1, grad.jitter, {"total": time.perf_counter() - start})
        predictive = _predictive(cov, shift[None], problem, options, key)
        kernels, outcome = np.asarray(cov.kernels) + shift, Outcome(method=ClosedForm())
        return finish("perturbative", kernels, None, info, outcome, predictive=predictive, throw=throw)
    blocks, n_used, met = _blocks_to_tolerance(cov, back, Y, options, key)
    estimates = Estimates("batches", np.asarray(cov.kernels) + blocks)
    info = PerturbativeInfo(
        conj, n_used, len(blocks), grad.jitter, {"total": time.perf_counter() - start}, met
    )
    if met is False:
        warn_user(
            f"perturbative: the CKA adaptation's SE is above rtol = {options.rtol} of the adaptation "
            f"after max_samples = {n_used} samples (info.rtol_met False)"
        )
    mean, se, outcome = estimates.kernels.mean(axis=0), estimates.se(), Outcome(method=options)
    predictive = _predictive(cov, blocks, problem, options, key)
    return finish(
        "perturbative", mean, se, info, outcome, estimates=estimates, predictive=predictive, throw=throw
    )


PATHS_PER_GROUP = 16  # prior fluctuation draws per batch of the first-order predictive
_PATHS_STREAM = 7919  # fold_in of the caller's key for those draws, apart from the kernels' own


def _predictive(cov, shifts, problem, options: MonteCarlo, key) -> Predictive | None:
    """The first-order posterior predictive on the test rows (T21 to O(1/N), `_predictive_terms`):
    batch r pairs the r-th block of the shift (all equal where it is exact) with the r-th group of
    PATHS_PER_GROUP prior fluctuation paths (kind "batches"); None without test rows."""
    P, Y = problem.P, problem.Y
    if len(problem.X_all) == P:
        return None
    R = options.n_batches
    shifts = np.broadcast_to(shifts[:, -1], (R,) + shifts.shape[-2:])
    paths = cov.output_paths(R * PATHS_PER_GROUP, key=jax.random.fold_in(as_key(key), _PATHS_STREAM))
    C_bar = jnp.asarray(cov.kernels[-1])
    means, variances = _predictive_terms(C_bar, jnp.asarray(shifts), paths, jnp.asarray(Y), cov.spec.kappa, R)
    means, variances = np.asarray(means), np.asarray(variances)
    return Predictive(means.mean(axis=0), variances.mean(axis=0), "batches", means, variances + means**2)


def predictor_derivatives(C_bar, delta, Y, kappa: float):
    """The derivatives of m and v (T21) at the output kernel C_bar along a direction delta (P', P'),
    training rows first: (dm, d2m, dv, d2v) with dm = A u, (1/2) d2m = -A K^-1 delta_tr u,
    dv = delta_** - 2 delta_* w + w^T delta_tr w and (1/2) d2v = -A K^-1 A^T (diagonals), where
    K = C_tr,tr + kappa I, u = K^-1 Y, w = K^-1 C_tr,*, A = delta_* - w^T delta_tr. Returns the
    first derivatives and the halved second ones: m(C + t delta) = m + t dm + t^2 d2m + O(t^3)."""
    P = Y.shape[0]
    factor = linalg.cholesky(C_bar[:P, :P] + kappa * jnp.eye(P))
    solve = functools.partial(linalg.cho_solve, factor)
    u, w = solve(Y), solve(C_bar[:P, P:])  # (P, D), (P, T)
    d_tr, d_st = delta[:P, :P], delta[P:, :P]
    A = d_st - w.T @ d_tr  # (T, P)
    AK = solve(A.T).T
    dm = A @ u
    d2m = -AK @ (d_tr @ u)
    dv = jnp.diag(delta[P:, P:]) - 2.0 * jnp.sum(d_st * w.T, axis=1) + jnp.sum(w * (d_tr @ w), axis=0)
    d2v = -jnp.sum(AK * A, axis=1)
    return dm, d2m, dv, d2v


@functools.partial(jax.jit, static_argnames="n_groups")
def _predictive_terms(C_bar, shifts, paths, Y, kappa, n_groups: int):
    """Per group r of the first-order predictive (T21 to O(1/N)): E[m] = m + dm[dC_r] + <d2m[D]>_r and
    E[v] + Var[m] = v + dv[dC_r] + <d2v[D] + dm[D]^2>_r, with dC_r the r-th block estimate of the
    posterior shift (R, P', P') and D the paths of the prior fluctuation, split into R groups."""
    m, second = predictive_moments(C_bar, Y, kappa)
    v = second - m**2
    linear = jax.vmap(lambda d: predictor_derivatives(C_bar, d, Y, kappa))
    dm, _, dv, _ = linear(shifts)
    dm_p, d2m_p, _, d2v_p = jax.lax.map(
        lambda d: predictor_derivatives(C_bar, d, Y, kappa), paths, batch_size=16
    )
    groups = lambda x: x.reshape((n_groups, -1) + x.shape[1:]).mean(axis=1)  # noqa: E731
    means = m + dm + groups(d2m_p)
    variances = v + (dv + groups(d2v_p))[..., None] + groups(dm_p**2)
    return means, variances


def _conjugate_kernels(back: dict, spec: NetworkSpec, shape) -> np.ndarray:
    """(L+1, P', P') first-order C~(l) = J_{L<-l}^T [G] / N (T13), index 0 zero."""
    conj = np.zeros((spec.depth + 1,) + shape)
    for k, A in back.items():
        conj[k] = np.asarray(A) / spec.width
    return conj


_ROUND_MAX = 32768  # samples per round: bounds the memory of phi, (L, M, P')


def _blocks_to_tolerance(cov, back, Y, options: MonteCarlo, key) -> tuple[np.ndarray, int, bool | None]:
    """(R, L+1, P', P') i.i.d. block estimates of the first-order shift, samples used, rtol met (None
    without rtol).

    Rounds r of n_r samples with independent keys each give R blocks; block b of the result is
    sum_r (n_r / n) block_(r,b), so the R blocks stay i.i.d. and average to the full estimate. After
    each round the SE of the CKA adaptation sets the size of the next."""
    R, n_used, n_round, total = options.n_batches, 0, options.n_samples, None
    nngp = np.asarray(cov.kernels)
    base = cka_layers(nngp, Y)[1:]
    r = -1
    while True:
        r += 1
        if r:  # fresh common random numbers with the same square roots
            z = jax.random.normal(
                jax.random.fold_in(as_key(key), r), (cov.spec.depth, n_round, nngp.shape[-1])
            )
            cov = dataclasses.replace(cov, phi=cov.spec.act.fn(jnp.einsum("lmp,lpq->lmq", z, cov.roots)))
        blocks = np.asarray(jnp.stack(cov.push_forward(back, n_batches=R), axis=1)) * n_round
        total = blocks if total is None else total + blocks
        n_used += n_round
        if options.rtol is None:
            return total / n_used, n_used, None
        combined = total / n_used
        se = cka_layers_se(nngp + combined, Y)[1:]
        target = se_target(cka_layers(nngp + combined.mean(axis=0), Y)[1:] - base, options.rtol)
        if np.all(se <= target):
            return combined, n_used, True
        if n_used >= options.max_samples:
            return combined, n_used, False
        need = n_used * float(np.max((se / np.maximum(target, 1e-300)) ** 2)) * 1.1 - n_used
        n_round = int(np.clip(need, options.n_samples, min(_ROUND_MAX, options.max_samples - n_used)))
        n_round = max(R * 2, n_round // R * R)  # whole blocks


def linear_output_shift(C_out, Y, kappa: float, depth: int, width: int) -> np.ndarray:
    """Closed form for linear networks without biases (T15), training block:

    delta C(L) = (L/N) [f f^T + D Sigma_f - D C], f = C K^-1 Y, Sigma_f = kappa C K^-1.
    """
    C_out = np.asarray(C_out)
    chol = output_cholesky(C_out, kappa)
    f = C_out @ cho_solve(chol, Y)
    sigma_f = kappa * cho_solve(chol, C_out).T
    D = Y.shape[1]
    return depth / width * (f @ f.T + D * sigma_f - D * C_out)
