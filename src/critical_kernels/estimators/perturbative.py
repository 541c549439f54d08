"""First-order (field-theory) adaptation of the kernels of all layers (T13-T15)."""

from __future__ import annotations

import time
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ..fluctuations import kernel_covariance
from ..likelihood import likelihood_gradient, output_cholesky
from ..numerics import check_targets, cho_solve, limit_blas_threads
from ..spec import NetworkSpec
from .base import KernelEstimate, finish
from .options import MonteCarlo


class PerturbativeInfo(NamedTuple):
    """conj_kernels: (L+1, P', P') first-order conjugate kernels C~(l) = J_{L<-l}^T[G]/N (index 0
    unused, zero on test rows); n_samples, n_batches: Monte Carlo of V (T5; unused for linear phi);
    jitter: Cholesky jitter of K; seconds; batch_kernels: (n_batches, L+1, P', P') the estimate from
    each disjoint block of the common random numbers alone (their mean is `kernels`; None for linear
    phi), so the SE of any function of the kernels (e.g. the CKA) is their spread / sqrt(n_batches)."""

    conj_kernels: np.ndarray
    n_samples: int
    n_batches: int
    jitter: float
    seconds: float
    batch_kernels: np.ndarray | None = None


@limit_blas_threads
def perturbative_kernels(
    spec: NetworkSpec,
    X,
    Y,
    X_test=None,
    *,
    options: MonteCarlo = MonteCarlo(),
    key=0,
    nngp=None,
    throw: bool = True,
) -> KernelEstimate:
    """First-order MAP / field-theory kernels of every layer (T13-T14).

    delta C(l) = (1/N) sum_{k <= l} J_{l<-k} V(k) J_{L<-k}^T [G], G = (1/2)(K^-1 YY^T K^-1 - D K^-1)
    at the NNGP output kernel: the prior kernel covariance contracted with the likelihood
    gradient. G is zero on test rows, so test kernels adapt only through the layers below.

    Args:
      spec: network; X: (P, d); Y: (P,) or (P, D); X_test: optional (P_test, d).
      options: MonteCarlo(n_samples, n_batches) for V (T5); exact (se = 0) for linear phi.
      key: int or PRNGKey of the common random numbers.
      nngp: the NNGP stack (L+1, P', P') if already computed.

    Returns:
      KernelEstimate "perturbative": kernels (L+1, P', P'), se from the spread over the n_batches
      blocks of common random numbers (None for linear phi, where V is exact), info PerturbativeInfo.

    Example:
      >>> est = perturbative_kernels(spec, data.X, data.Y); ck.cka_layers(est.kernels, data.Y)
    """
    start = time.perf_counter()
    cov = kernel_covariance(spec, X, X_test, key=key, n_samples=options.n_samples, nngp=nngp)
    P = np.shape(X)[0]
    Y = check_targets(Y, P, spec.n_out)
    G = np.zeros(cov.kernels.shape[1:])
    grad = likelihood_gradient(np.asarray(cov.kernels[-1])[:P, :P], Y, spec.kappa)
    G[:P, :P] = grad.G
    back = cov.pullback(G)  # C~(l) = J_{L<-l}^T [G] / N (T13)
    conj = np.zeros((spec.depth + 1,) + G.shape)
    for k, A in back.items():
        conj[k] = np.asarray(A) / spec.width
    R = options.n_batches
    blocks = np.asarray(jnp.stack(cov.push_forward(back, n_batches=R), axis=1))  # (R, L+1, P', P')
    kernels = np.asarray(cov.kernels) + blocks.mean(axis=0)
    exact = cov.phi is None  # linear phi: V exact
    se = None if exact else blocks.std(axis=0, ddof=1) / np.sqrt(R)
    batches = None if exact else np.asarray(cov.kernels) + blocks
    info = PerturbativeInfo(conj, options.n_samples, R, grad.jitter, time.perf_counter() - start, batches)
    return finish("perturbative", kernels, se, info, throw=throw, jitter=grad.jitter)


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
