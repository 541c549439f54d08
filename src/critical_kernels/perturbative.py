"""First-order (field-theory) adaptation of the kernels of all layers (T13-T15)."""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from .fluctuations import kernel_covariance
from .metrics import cka_layers
from .numerics import check_targets, cho_solve, psd_cholesky
from .spec import NetworkSpec


@dataclass(frozen=True)
class KernelResult:
    """Kernels of every layer on train + test inputs and what they imply.

    kernels: (L+1, P', P') adapted kernels; nngp: (L+1, P', P') NNGP kernels;
    conj_kernels: (L+1, P', P') conjugate kernels C~ (zero on test rows; index 0 unused);
    cka: (L+1,) CKA of each adapted layer with Y on the training block; method: a label.
    """

    kernels: np.ndarray
    nngp: np.ndarray
    conj_kernels: np.ndarray
    cka: np.ndarray
    method: str


def _output_cholesky(C_out, kappa: float):
    """Cholesky factor of K = C + kappa I (T8)."""
    return psd_cholesky(np.asarray(C_out) + kappa * np.eye(len(C_out)), "output kernel + kappa I")


def likelihood_gradient(C_out, Y, kappa: float) -> np.ndarray:
    """G = (1/2)(K^-1 Y Y^T K^-1 - D K^-1), K = C + kappa I: d ln p(Y|C) / dC (T11, T13)."""
    chol = _output_cholesky(C_out, kappa)
    alpha = cho_solve(chol, Y)
    return 0.5 * (alpha @ alpha.T - Y.shape[1] * cho_solve(chol, np.eye(len(C_out))))


def perturbative_kernels(
    spec: NetworkSpec, X, Y, X_test=None, *, key=0, n_samples: int = 4096
) -> KernelResult:
    """First-order MAP / field-theory kernels of every layer (T13-T14).

    delta C(l) = (1/N) sum_{k <= l} J_{l<-k} V(k) J_{L<-k}^T [G], G = (1/2)(K^-1 YY^T K^-1 - D K^-1)
    at the NNGP output kernel: the prior kernel covariance contracted with the likelihood
    gradient. G is zero on test rows, so test kernels adapt only through the layers below.

    Args:
      spec: network; X: (P, d); Y: (P,) or (P, D); X_test: optional (P_test, d).
      key, n_samples: common random numbers for V (T5); unused for linear phi.

    Returns:
      KernelResult with method "perturbative".

    Example:
      >>> res = perturbative_kernels(spec, data.X, data.Y); res.cka[-1]
    """
    cov = kernel_covariance(spec, X, X_test, key=key, n_samples=n_samples)
    P = np.shape(X)[0]
    Y = check_targets(Y, P, spec.n_out)
    G = np.zeros(cov.kernels.shape[1:])
    G[:P, :P] = likelihood_gradient(np.asarray(cov.kernels[-1])[:P, :P], Y, spec.kappa)
    back = cov.pullback(G)  # C~(l) = J_{L<-l}^T [G] / N (T13)
    conj = np.zeros((spec.depth + 1,) + G.shape)
    for k, A in back.items():
        conj[k] = np.asarray(A) / spec.width
    nngp = np.asarray(cov.kernels)
    kernels = nngp + np.asarray(jnp.stack(cov.push_forward(back)))
    return KernelResult(kernels, nngp, conj, cka_layers(kernels, Y), "perturbative")


def linear_output_shift(C_out, Y, kappa: float, depth: int, width: int) -> np.ndarray:
    """Closed form for linear networks without biases (T15), training block:

    delta C(L) = (L/N) [f f^T + D Sigma_f - D C], f = C K^-1 Y, Sigma_f = kappa C K^-1.
    """
    C_out = np.asarray(C_out)
    chol = _output_cholesky(C_out, kappa)
    f = C_out @ cho_solve(chol, Y)
    sigma_f = kappa * cho_solve(chol, C_out).T
    D = Y.shape[1]
    return depth / width * (f @ f.T + D * sigma_f - D * C_out)
