"""Infinite-width kernels: the NNGP recursion (T1) and response functions (T2)."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .activations import Activation, gaussian_moments
from .errors import InputError
from .numerics import check_inputs, limit_blas_threads
from .spec import NetworkSpec


def mu(act: Activation, g: float, g_b: float, C):
    """One layer of the NNGP map (T1): mu(C) = g <phi phi^T>_C + g_b 11^T.  C: (P, P)."""
    return g * gaussian_moments(act, "pp", C) + g_b


def input_kernel(spec: NetworkSpec, X) -> np.ndarray:
    """C0 = (g_in/d) X X^T + g_b0 11^T for inputs X (P, d); deterministic."""
    X = np.asarray(X, dtype=np.float64)
    return (spec.g_in / X.shape[1]) * X @ X.T + spec.bias_vars[0]


_mu_inplace = jax.jit(mu, static_argnums=0, donate_argnums=3)  # reuses C's buffer


@limit_blas_threads
def nngp_kernels(spec: NetworkSpec, X, X_test=None) -> np.ndarray:
    """NNGP kernels of every layer (T1) on training plus test inputs.

    Args:
      spec: the network.
      X: training inputs, (P, d).
      X_test: optional test inputs, (P_test, d), appended after the training rows.

    Returns:
      NumPy (L+1, P+P_test, P+P_test) float64: C0 (inputs) and C1..CL, CL the output kernel.

    Example:
      >>> import critical_kernels as ck
      >>> data = ck.datasets.xor(n_train=20, n_test=5)
      >>> C = ck.nngp_kernels(ck.NetworkSpec(depth=3, g_w=1.5, g_b=0.1), data.X, data.X_test)
      >>> C.shape  # the input kernel C0 and C1..C3, on the 20 training and 5 test rows
      (4, 25, 25)
    """
    if not isinstance(spec, NetworkSpec):
        raise InputError(f"spec: expected a NetworkSpec, got {type(spec).__name__}")
    return nngp_stack(spec, check_inputs(X, X_test))


def nngp_stack(spec: NetworkSpec, X_all: np.ndarray) -> np.ndarray:
    """nngp_kernels on already validated inputs (P', d)."""
    P = X_all.shape[0]
    C0 = input_kernel(spec, X_all)
    gains, bias_vars = spec.gains, spec.bias_vars[1:]
    # one compiled call per layer into a reused (donated) buffer, copied into a NumPy stack:
    # measured faster than a device-side lax.scan / fori_loop over a (L+1, P, P) buffer
    stack = np.empty((spec.depth + 1, P, P))
    stack[0] = C0
    C = jnp.array(C0)
    for l, (g, g_b) in enumerate(zip(gains, bias_vars, strict=True)):
        C = _mu_inplace(spec.act, g, g_b, C)
        stack[l + 1] = np.asarray(C)
    return stack


class Response(NamedTuple):
    """Response function J = d mu / dC at C_prev (T2) as two (P, P) matrices, never P^2 x P^2.

    dd[a, b] = g <phi'_a phi'_b>, d2p[a, b] = g <phi''_a phi_b>, both at C_prev. For symmetric T, A:
      J[T]_ab   = dd_ab T_ab + (d2p_ab T_aa + d2p_ba T_bb) / 2
      J^T[A]_ab = dd_ab A_ab + delta_ab sum_c d2p_ac A_ac
    """

    dd: jnp.ndarray
    d2p: jnp.ndarray

    def jvp(self, T):
        """J[T] for a symmetric direction T (P, P)."""
        t = jnp.diagonal(T)
        return self.dd * T + 0.5 * (self.d2p * t[:, None] + self.d2p.T * t[None, :])

    def vjp(self, A):
        """J^T[A] for a symmetric cotangent A (P, P) (T2)."""
        return self.dd * A + jnp.diag(jnp.sum(self.d2p * A, axis=1))


def response(act: Activation, g: float, C_prev) -> Response:
    """The closed-form response function of the layer map mu at C_prev (T2)."""
    return Response(g * gaussian_moments(act, "dd", C_prev), g * gaussian_moments(act, "d2p", C_prev))


def layer_responses(spec: NetworkSpec, kernels) -> Response:
    """Responses J(1)..J(L) along a kernel stack (L+1, P, P); fields stacked as (L, P, P)."""
    per_layer = [response(spec.act, g, kernels[l]) for l, g in enumerate(spec.gains)]
    return Response(*(jnp.stack(parts) for parts in zip(*per_layer, strict=True)))


def response_autodiff(act: Activation, g: float, g_b: float, C_prev):
    """(jvp, vjp) of mu at C_prev by JAX autodiff: the independent route for the closed form."""
    f = partial(mu, act, g, g_b)
    _, vjp_fn = jax.vjp(f, jnp.asarray(C_prev))
    return (lambda T: jax.jvp(f, (C_prev,), (T,))[1]), (lambda A: vjp_fn(A)[0])
