"""Measurements on kernels: centred kernel alignment (T16) and test error."""

from __future__ import annotations

import numpy as np

from .errors import InputError


def _centre(K: np.ndarray) -> np.ndarray:
    """H K H with H = I - 11^T / P."""
    K = K - K.mean(axis=0, keepdims=True)
    return K - K.mean(axis=1, keepdims=True)


def cka(K, Y) -> float:
    """Centred kernel alignment of K with the target kernel T = Y Y^T (T16).

    CKA(K, T) = <HKH, HTH>_F / (||HKH||_F ||HTH||_F), H = I - 11^T/P.

    Args:
      K: kernel on the training inputs, (P, P).
      Y: targets, (P,) or (P, D).

    Returns:
      A float in [-1, 1]; 1 means K is proportional to the centred target kernel.

    Example:
      >>> cka(nngp_kernels(spec, X)[-1], Y)
    """
    K = np.asarray(K, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] != Y.shape[0]:
        raise InputError(f"cka: K must be (P, P) with P = len(Y) = {Y.shape[0]}, got {K.shape}")
    Kc, Tc = _centre(K), _centre(Y @ Y.T)
    norm = np.linalg.norm(Kc) * np.linalg.norm(Tc)
    if norm == 0:
        raise InputError("cka: a centred kernel is zero (constant kernel or constant targets)")
    return float(np.sum(Kc * Tc) / norm)


def cka_layers(kernels, Y) -> np.ndarray:
    """CKA of every layer of a stack (L+1, P', P') against Y (P, D), on the first P rows.

    NaN for a layer where CKA is undefined (a centred kernel or the centred targets vanish,
    e.g. P = 1), so result objects can always carry it.
    """
    kernels = np.asarray(kernels)
    P = np.shape(Y)[0]
    out = np.full(len(kernels), np.nan)
    for l, K in enumerate(kernels):
        try:
            out[l] = cka(K[:P, :P], Y)
        except InputError as err:
            if "is zero" not in str(err):
                raise
    return out
