"""Measurements on kernels: centred kernel alignment (T16) and test error."""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .numerics import check_se_kind, standard_error


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
      >>> import numpy as np
      >>> Y = np.array([1.0, -1.0, 1.0, -1.0])
      >>> round(cka(np.outer(Y, Y) + 2.0, Y), 12)  # a constant offset is centred away
      1.0
      >>> round(cka(np.eye(4), Y), 4)  # the identity: 1/sqrt(P - 1) of the way
      0.5774
    """
    K = np.asarray(K, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] != Y.shape[0]:
        raise InputError(f"cka: K must be (P, P) with P = len(Y) = {Y.shape[0]}, got {K.shape}")
    if not np.isfinite(K).all():
        raise InputError(f"cka: K is not finite ({int((~np.isfinite(K)).sum())} NaN/inf entries)")
    if not np.isfinite(Y).all():
        raise InputError(f"cka: Y is not finite ({int((~np.isfinite(Y)).sum())} NaN/inf entries)")
    Kc, Tc = _centre(K), _centre(Y @ Y.T)
    norm = np.linalg.norm(Kc) * np.linalg.norm(Tc)
    if norm == 0:
        raise InputError("cka: a centred kernel is zero (constant kernel or constant targets)")
    return float(np.sum(Kc * Tc) / norm)


def cka_layers(kernels, Y) -> np.ndarray:
    """CKA of every layer of a stack (L+1, P', P') against Y (P, D), on the first P rows.

    NaN for a layer where CKA is undefined (a centred kernel or the centred targets vanish,
    e.g. P = 1) or whose kernel is not finite (a failed estimate), so result objects can always
    carry it; `cka` itself raises InputError for both.
    """
    kernels = np.asarray(kernels)
    P = np.shape(Y)[0]
    out = np.full(len(kernels), np.nan)
    for l, K in enumerate(kernels):
        try:
            out[l] = cka(K[:P, :P], Y)
        except InputError as err:
            if "is zero" not in str(err) and "K is not finite" not in str(err):
                raise
    return out


def se_target(adaptation, rtol: float) -> np.ndarray:
    """The SE a tolerance asks of the CKA adaptation of each hidden layer: rtol max(|a_l|, max|a| / 10).

    A layer that adapts less than a tenth of the most-adapting one is held to rtol of that tenth, so
    a layer with (almost) no adaptation does not demand unbounded samples."""
    a = np.abs(np.asarray(adaptation, dtype=float))
    return rtol * np.maximum(a, 0.1 * a.max(initial=0.0))


def cka_layers_se(kernels, Y, *, kind: str = "batches") -> np.ndarray:
    """Standard error of the CKA of every layer from B estimates of the kernels.

    Args:
      kernels: (..., L+1, P', P') estimates (leading axes flattened, e.g. chains x batches).
      Y: (P, D) targets.
      kind: "batches" (independent batch means), "jackknife" (leave-one-batch-out estimates) or
        "replicas" (independent full estimates); `numerics.standard_error`.

    Returns:
      (L+1,) the SE of the CKA: the spread (ddof 1) of the per-estimate CKA times 1/sqrt(B),
      (B - 1)/sqrt(B) or 1.
    """
    check_se_kind(kind)  # before the per-estimate CKA
    kernels = np.asarray(kernels)
    flat = kernels.reshape((-1,) + kernels.shape[-3:])
    return standard_error(np.array([cka_layers(b, Y) for b in flat]), kind)


def test_error(f_test, Y_test) -> dict:
    """Mean squared error and, for +-1 targets, the sign classification error.

    Args:
      f_test: predictions, (P_test,) or (P_test, D).
      Y_test: targets of the same shape.
    """
    f_test = np.asarray(f_test, dtype=np.float64)
    Y_test = np.asarray(Y_test, dtype=np.float64)
    f_test = f_test.reshape(len(f_test), -1) if f_test.ndim else f_test
    Y_test = Y_test.reshape(len(Y_test), -1) if Y_test.ndim else Y_test
    if f_test.ndim != 2 or f_test.shape != Y_test.shape:
        raise InputError(
            f"test_error: f_test {np.shape(f_test)} and Y_test {np.shape(Y_test)} must have the same shape"
        )
    if f_test.size == 0:
        raise InputError("test_error: no test points")
    out = {"mse": float(np.mean((f_test - Y_test) ** 2))}
    if np.all(np.isin(Y_test, (-1.0, 1.0))):
        out["class_error"] = float(np.mean(np.sign(f_test) != Y_test))
    return out


test_error.__test__ = False  # pyright: ignore[reportFunctionMemberAccess]  (not a pytest test)
