"""The scalar renormalised-kernel theory of one-hidden-layer networks (Pacelli et al. 2023; T23).

In the proportional limit P, N -> infinity at fixed alpha = P/N the readout kernel of a one-hidden-layer
network is taken to be the NNGP kernel K = C(1) times one scalar order parameter Q, fixed by the
saddle point of

  S(Q) = Q - ln Q + (1/N) [D sum_a ln(kappa + Q lambda_a) + sum_a |y~_a|^2 / (kappa + Q lambda_a)],

with lambda_a the eigenvalues of K on the training inputs and y~ the targets in its eigenbasis. For
linear phi without biases this is exactly the mode in t = ln u of the exact posterior over the
readout's squared norm u = |a|^2/N (T18), which is how it is tested. A scalar rescaling leaves the
kernel's shape unchanged: the CKA of every layer is the NNGP's, and all of the theory's finite-width
effect sits in the predictor.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
from scipy.optimize import minimize_scalar

from ..errors import SpecError
from ..nngp import nngp_kernels
from ..numerics import limit_blas_threads
from ..predictive import kernel_predictive
from ..spec import NetworkSpec
from .base import KernelEstimate, Outcome, finish, prepare
from .options import ClosedForm

_T_GRID = np.linspace(-15.0, 15.0, 301)  # ln Q scanned for the global minimum before Brent refines it


class ScalarInfo(NamedTuple):
    """q_bar: the order parameter Q (the renormalised readout kernel is Q K); action: S(Q) at it;
    gradient: dS/dQ there (0 at the saddle point); timings: {"total": wall seconds}."""

    q_bar: float
    action: float
    gradient: float
    timings: dict


def _action(t, lam, y2, width: int, kappa: float, D: int):
    """S(Q) at Q = e^t (T23) and dS/dQ."""
    Q = np.exp(t)
    den = kappa + Q * lam
    S = Q - t + (D * np.sum(np.log(den)) + np.sum(y2 / den)) / width
    dS = 1.0 - 1.0 / Q + (D * np.sum(lam / den) - np.sum(y2 * lam / den**2)) / width
    return S, dS


@limit_blas_threads
def scalar_renormalised_kernels(
    spec: NetworkSpec, X, Y, X_test=None, *, throw: bool = True
) -> KernelEstimate:
    """Pacelli et al.'s scalar theory (T23) for one hidden layer: the NNGP readout kernel times Q.

    Args:
      spec: network with depth 1 (any activation; biases are rescaled with the kernel, whereas the
        paper has none); X: (P, d); Y: (P,) or (P, D); X_test: optional (P_test, d).
      throw: raise on failure (default).

    Returns:
      KernelEstimate "scalar": kernels [C0, Q C(1)] on train + test rows (exact given Q: se None),
      info ScalarInfo; with test rows the predictive of the renormalised kernel (T21 at Q C(1)).

    Example:
      >>> import critical_kernels as ck
      >>> data = ck.datasets.xor(n_train=20, n_test=0)
      >>> spec = ck.NetworkSpec(depth=1, width=10**9, activation="erf", g_b=0.1)
      >>> round(scalar_renormalised_kernels(spec, data.X, data.Y).info.q_bar, 6)  # infinite width: 1
      1.0
    """
    start = time.perf_counter()
    _, X_all, Y, P = prepare(spec, X, Y, X_test)
    if spec.depth != 1:
        raise SpecError(f"depth: the scalar theory (T23) is for one hidden layer, got depth {spec.depth}")
    kernels = nngp_kernels(spec, X_all)
    lam, U = np.linalg.eigh(kernels[-1][:P, :P])
    lam = np.maximum(lam, 0.0)
    y2 = np.sum((U.T @ Y) ** 2, axis=1)
    args = (lam, y2, spec.width, spec.kappa, Y.shape[1])
    best = _T_GRID[np.argmin([_action(t, *args)[0] for t in _T_GRID])]
    step = _T_GRID[1] - _T_GRID[0]
    found = minimize_scalar(
        lambda t: _action(t, *args)[0],
        bounds=(best - step, best + step),
        method="bounded",
        options={"xatol": 1e-12},
    )
    t_bar = float(found.x)  # pyright: ignore[reportAttributeAccessIssue]  (an OptimizeResult)
    S, dS = _action(t_bar, *args)
    q_bar = float(np.exp(t_bar))
    kernels[-1] = q_bar * kernels[-1]
    info = ScalarInfo(q_bar, float(S), float(dS), {"total": time.perf_counter() - start})
    predictive = kernel_predictive(kernels, Y, spec.kappa) if len(X_all) > P else None
    outcome = Outcome(method=ClosedForm())
    return finish("scalar", kernels, None, info, outcome, predictive=predictive, throw=throw)
