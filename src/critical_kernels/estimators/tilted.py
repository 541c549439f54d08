"""Averages in the tilted single-neuron measure of one layer (T9, T10).

dP_l(h) ∝ N(h; 0, C(l-1)) exp(g phi^T C~(l) phi). Methods (static argument `method`):
  "linear"     exact Gaussian formulas (T9-T10 closed form);
  "importance" self-normalised importance sampling with common random numbers z (h = z sqrt(C)),
               the closed-form untilted averages as control variates, and the effective sample fraction;
  "cumulant"   second-cumulant approximation: exp(s) linearised about its mean (THEORY section 4).
Plain functions: map.py compiles them into one sweep (forward, output, backward) and one stage.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..activations import Activation, gaussian_moments
from ..nngp import response
from ..numerics import psd_sqrt, symmetrize
from .options import ExactGaussian, ImportanceSampling, SecondCumulant


def method_name(option) -> str:
    """The static method label of a tilted-average option."""
    return {ExactGaussian: "linear", ImportanceSampling: "importance", SecondCumulant: "cumulant"}[
        type(option)
    ]


def _linear_factor(g, C_prev, Ct):
    """I - 2 g C' C~ of the closed-form tilted Gaussian (T9-T10); whether the tilted measure
    is normalisable (C'^-1 - 2g C~ > 0) is checked on the converged kernels, not per sweep."""
    return jnp.eye(len(Ct)) - 2.0 * g * C_prev @ Ct


class LayerSamples(NamedTuple):
    """The common random numbers of one layer at C_prev: phi, phi', phi'' of h = z sqrt(C_prev)
    (M, P) each, and the exact untilted <phi phi^T> (P, P), the control variate."""

    phi: jnp.ndarray
    d1: jnp.ndarray
    d2: jnp.ndarray
    second: jnp.ndarray


def layer_samples(act: Activation, C_prev, z) -> LayerSamples:
    """One square root of C_prev per layer and sweep, shared by the forward and backward averages."""
    h = z @ psd_sqrt(C_prev)
    return LayerSamples(act.fn(h), act.d1(h), act.d2(h), gaussian_moments(act, "pp", C_prev))


def _weights(method, s, s_mean):
    """Sample weights a (tilted minus untilted) and b (tilted) with ESS fraction (T9-T10)."""
    M = s.shape[0]
    if method == "importance":
        w = jax.nn.softmax(s)
        return w - 1.0 / M, w, 1.0 / (M * jnp.sum(w**2))
    # second cumulant: exp(s) linearised about its mean
    return (s - s_mean) / M, jnp.full(M, 1.0 / M), jnp.ones(())


def layer_forward(act: Activation, method: str, g, g_b, Ct, C_prev, samples: LayerSamples | None, ones):
    """C(l) = g <phi phi^T>_tilted + g_b o o^T (T9), o = ones in the original coordinates;
    returns (C, effective sample fraction). `samples` is None for the linear (exact) method."""
    bias = g_b * jnp.outer(ones, ones)
    if method == "linear":
        C = symmetrize(g * jnp.linalg.solve(_linear_factor(g, C_prev, Ct), C_prev)) + bias
        return C, jnp.where(jnp.all(jnp.isfinite(C)), 1.0, jnp.nan)
    phi, second = samples.phi, samples.second
    s = g * jnp.einsum("mp,pq,mq->m", phi, Ct, phi)
    a, _, ess = _weights(method, s, g * jnp.sum(Ct * second))
    tilt = (phi * a[:, None]).T @ phi - second * jnp.sum(a)  # control variate: exact <phi phi^T>
    return symmetrize(g * (second + tilt)) + bias, ess


def layer_backward(act: Activation, method: str, g, A, C_prev, samples: LayerSamples | None):
    """C~(l-1) from A = C~(l) in the tilted measure at C(l-1) (T10); returns (C~, ESS fraction)."""
    if method == "linear":
        At = symmetrize(g * jnp.linalg.solve(_linear_factor(g, C_prev, A).T, A).T)
        return At, jnp.where(jnp.all(jnp.isfinite(At)), 1.0, jnp.nan)
    phi, d1, d2, second = samples
    A_phi = phi @ A
    s = g * jnp.sum(phi * A_phi, axis=1)
    a, b, ess = _weights(method, s, g * jnp.sum(A * second))
    u = d1 * A_phi
    untilted = response(act, g, C_prev).vjp(A)  # closed-form control variate (T2)
    tilt = g * A * ((d1 * a[:, None]).T @ d1) + jnp.diag(g * jnp.sum(a[:, None] * d2 * A_phi, axis=0))
    return symmetrize(untilted * (1.0 - jnp.sum(a)) + tilt + 2.0 * g**2 * (u * b[:, None]).T @ u), ess
