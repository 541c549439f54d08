"""The Gaussian likelihood of the output kernel (T8, T11): one implementation for every estimator.

ln p(Y | C) = -1/2 tr(Y^T K^-1 Y) - (D/2) ln det K - (PD/2) ln 2 pi,  K = C + kappa I,
its gradient G = d ln p / dC = (1/2)(K^-1 Y Y^T K^-1 - D K^-1) (T11, T13), and the kernel
predictor f_* = C_{*,tr} K^-1 Y (THEORY section 4).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import linalg
from .numerics import Cholesky, check_targets, cho_solve, psd_cholesky


def output_cholesky(C_train, kappa: float) -> Cholesky:
    """Cholesky factor of K = C + kappa I on the training block, with its recorded jitter."""
    C_train = np.asarray(C_train)
    return psd_cholesky(C_train + kappa * np.eye(len(C_train)), "output kernel + kappa I")


@jax.jit
def log_evidence(C_train, Y, kappa):
    """ln N(Y; 0, C + kappa I) (T8), batched over leading axes of C_train (..., P, P); Y (P, D).

    K = C + kappa I is positive definite for any PSD C and kappa > 0, so no jitter is needed.
    """
    K = C_train + kappa * jnp.eye(C_train.shape[-1])
    chol = linalg.cholesky(K)
    Yb = jnp.broadcast_to(Y, C_train.shape[:-2] + Y.shape)
    alpha = linalg.cho_solve(chol, Yb)
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    P, D = Y.shape
    return -0.5 * jnp.sum(Yb * alpha, axis=(-2, -1)) - 0.5 * D * logdet - 0.5 * P * D * math.log(2 * math.pi)


def predictive_moments(C, Y, kappa):
    """Mean m and second moment m^2 + v of the output f* on the test rows given a network's output
    kernel C (T21): m = C_te,tr K^-1 Y, v = diag(C_te,te - C_te,tr K^-1 C_tr,te), K = C_tr,tr + kappa I;
    C (P', P') with the P = len(Y) training rows first, Y (P, D); each result (P' - P, D). JAX,
    traceable (vmap it over networks)."""
    P = Y.shape[0]
    factor = linalg.cholesky(C[:P, :P] + kappa * jnp.eye(P))
    m = C[P:, :P] @ linalg.cho_solve(factor, Y)
    v = jnp.diag(C[P:, P:]) - jnp.sum(C[P:, :P] * linalg.cho_solve(factor, C[:P, P:]).T, axis=1)
    return m, m**2 + v[:, None]


def batched_predictive_moments(C, Y, kappa):
    """`predictive_moments` over a leading axis of kernels C (B, P', P'): each result (B, P' - P, D)."""
    return jax.vmap(predictive_moments, in_axes=(0, None, None))(C, Y, kappa)


class Gradient(NamedTuple):
    """G = d ln p(Y|C) / dC (P, P) and the Cholesky jitter K needed."""

    G: np.ndarray
    jitter: float


def gradient_from_factor(factor, Y):
    """G = (1/2)(K^-1 Y Y^T K^-1 - D K^-1) from the lower Cholesky factor of K (T11, T13); JAX,
    so the compiled MAP sweep and NumPy callers share it."""
    alpha = linalg.cho_solve(factor, Y)
    K_inv = linalg.cho_solve(factor, jnp.eye(factor.shape[-1]))
    return 0.5 * (alpha @ alpha.T - Y.shape[1] * K_inv)


def likelihood_gradient(C_train, Y, kappa: float) -> Gradient:
    """G = (1/2)(K^-1 Y Y^T K^-1 - D K^-1), K = C + kappa I (T11, T13), with recorded jitter.

    Args:
      C_train: output kernel on the training inputs (P, P); Y: (P, D); kappa: noise variance.
    """
    chol = output_cholesky(C_train, kappa)
    return Gradient(
        np.asarray(gradient_from_factor(chol.factor, np.asarray(Y, dtype=np.float64))), chol.jitter
    )


def kernel_predict(C, Y, kappa: float) -> np.ndarray:
    """Posterior-mean predictor f_* = C_{*,tr} (C_tr,tr + kappa I)^-1 Y (THEORY section 4).

    Args:
      C: kernel on train + test inputs, (P + P_test, P + P_test), training rows first.
      Y: training targets (P,) or (P, D); kappa: noise variance.

    Returns:
      (P_test, D) predictions.
    """
    C = np.asarray(C)
    Y = np.asarray(Y, dtype=np.float64)
    Y = check_targets(Y, Y.shape[0])
    P = Y.shape[0]
    return C[P:, :P] @ cho_solve(output_cholesky(C[:P, :P], kappa), Y)
