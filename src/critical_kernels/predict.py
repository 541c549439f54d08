"""Kernel predictor on test points and its test error."""

from __future__ import annotations

import numpy as np

from .numerics import check_targets, cho_solve, psd_cholesky


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
    chol = psd_cholesky(C[:P, :P] + kappa * np.eye(P), "training kernel + kappa I")
    return C[P:, :P] @ cho_solve(chol, Y)


def test_error(f_test, Y_test) -> dict:
    """Mean squared error and, for +-1 targets, the sign classification error."""
    f_test = np.asarray(f_test).reshape(len(f_test), -1)
    Y_test = np.asarray(Y_test, dtype=np.float64).reshape(len(f_test), -1)
    out = {"mse": float(np.mean((f_test - Y_test) ** 2))}
    if np.all(np.isin(Y_test, (-1.0, 1.0))):
        out["class_error"] = float(np.mean(np.sign(f_test) != Y_test))
    return out


test_error.__test__ = False  # not a pytest test
