"""Averages in the tilted single-neuron measure of one layer (T9, T10).

dP_l(h) ∝ N(h; 0, C(l-1)) exp(g phi^T C~(l) phi). Methods (static argument `method`):
  "linear"     exact Gaussian formulas (T9-T10 closed form);
  "importance" self-normalised importance sampling with common random numbers z, the closed-form
               untilted averages as control variates, and the effective sample fraction; the
               proposal is the untilted Gaussian, h = u sqrt(C) in the whitened coordinates u = z of
               the training rows (test rows conditionally on them);
  "importance (adaptive)" the same with the defensive mixture proposal q = a N(0, I) + (1 - a) N(0, S)
               for u: the untilted Gaussian and a Gaussian moment-matched to the tilted measure
               (S ≈ tilted E[u u^T]), exact weights N(u; 0, I) exp(g phi^T C~ phi) / q(u); the share
               a keeps the control-variate weights N(u; 0, I) / q(u) <= 1/a bounded. map.py fixes S
               within an annealing stage and re-estimates it between stages (proposal_update);
  "cumulant"   second-cumulant approximation: exp(s) linearised about its mean (THEORY section 4).
Plain functions: map.py compiles them into one sweep (forward, output, backward) and one stage.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import linalg
from ..activations import Activation, gaussian_moments
from ..nngp import response
from ..numerics import psd_sqrt, symmetrize
from .options import ExactGaussian, ImportanceSampling, SecondCumulant

ADAPTIVE = "importance (adaptive)"
# smallest eigenvalue of the adaptive proposal covariance S: S only shapes the proposal (the
# weights are exact for any S), so clipping keeps the square root real without biasing anything
_PROPOSAL_FLOOR = 0.05
# share of the draws from the untilted N(0, I) in the adaptive (defensive) mixture proposal
_DEFENSIVE = 0.25
# eigenvalues of the training block below this fraction of the largest count as zero when the
# test rows are drawn conditionally on the training rows (C0 of low-dimensional inputs is singular)
_PINV_RTOL = 1e-10


def method_name(option) -> str:
    """The jit-static name of a tilted-average option inside the compiled sweeps (the reader's name is
    the option's `label`)."""
    if isinstance(option, ImportanceSampling) and option.adaptive:
        return ADAPTIVE
    return {ExactGaussian: "linear", ImportanceSampling: "importance", SecondCumulant: "cumulant"}[
        type(option)
    ]


def _linear_factor(g, C_prev, Ct):
    """I - 2 g C' C~ of the closed-form tilted Gaussian (T9-T10); whether the tilted measure
    is normalisable (C'^-1 - 2g C~ > 0) is checked on the converged kernels, not per sweep."""
    return jnp.eye(len(Ct)) - 2.0 * g * C_prev @ Ct


class LayerSamples(NamedTuple):
    """The common random numbers of one layer at C_prev: phi, phi', phi'' of the draws h (M, P')
    each, the exact untilted <phi phi^T> (P', P'), the control variate, and for the adaptive
    proposal the whitened training coordinates u (M, P) and ln N(u; 0, I) - ln q(u) (M,) up to a
    constant (None for the untilted proposal)."""

    phi: jnp.ndarray
    d1: jnp.ndarray
    d2: jnp.ndarray
    second: jnp.ndarray
    u: jnp.ndarray | None = None
    log_ratio: jnp.ndarray | None = None


class Proposal(NamedTuple):
    """The Gaussian part N(0, S) of an adaptive proposal: sqrt(S), S^(-1/2), ln det S."""

    root: jnp.ndarray
    inv_root: jnp.ndarray
    log_det: jnp.ndarray


def proposal(D) -> Proposal:
    """The adaptive proposal S = I + D (P, P), eigenvalues clipped at _PROPOSAL_FLOOR."""
    w, U = linalg.eigh(symmetrize(D) + jnp.eye(len(D)))
    w = jnp.maximum(w, _PROPOSAL_FLOOR)
    return Proposal((U * jnp.sqrt(w)) @ U.T, (U / jnp.sqrt(w)) @ U.T, jnp.sum(jnp.log(w)))


def _conditional_draws(C, u, z_test):
    """h (M, P') with training rows u sqrt(C_tt) and test rows drawn from the Gaussian conditional
    given them: h_te = u K + z_te sqrt(C_ee - K^T K), K = C_tt^(-1/2) C_te (pseudo-inverse), so
    the training rows are the draws of the solve whether or not there are test rows."""
    P = u.shape[1]
    w, U = linalg.eigh(symmetrize(C[:P, :P]))
    w = jnp.clip(w, 0.0, None)
    h_train = u @ ((U * jnp.sqrt(w)) @ U.T)
    if z_test.shape[1] == 0:
        return h_train
    kept = w > _PINV_RTOL * w[-1]
    K = (U * jnp.where(kept, 1.0 / jnp.sqrt(jnp.where(kept, w, 1.0)), 0.0)) @ U.T @ C[:P, P:]
    return jnp.concatenate([h_train, u @ K + z_test @ psd_sqrt(C[P:, P:] - K.T @ K)], axis=1)


def layer_samples(act: Activation, C_prev, z, n_train: int, q: Proposal | None = None) -> LayerSamples:
    """The draws of one layer and sweep at C_prev (P', P'), shared by the forward and backward
    averages: whitened training coordinates u = z[:, :n_train] (untilted proposal, q None) or the
    defensive mixture (the first _DEFENSIVE of the draws u = z, the rest u = z sqrt(S)); test rows
    conditionally on the training rows."""
    z_train, n_untilted = z[:, :n_train], int(_DEFENSIVE * len(z))  # static
    u = z_train if q is None else jnp.concatenate([z_train[:n_untilted], z_train[n_untilted:] @ q.root])
    h = _conditional_draws(C_prev, u, z[:, n_train:])
    samples = LayerSamples(act.fn(h), act.d1(h), act.d2(h), gaussian_moments(act, "pp", C_prev))
    if q is None:
        return samples
    # ln N(u; 0, I) - ln q(u), q = a N(0, I) + (1 - a) N(0, S), up to a constant; S^(-1/2) u = z
    # for the draws from N(0, S)
    white = jnp.concatenate([z_train[:n_untilted] @ q.inv_root, z_train[n_untilted:]])
    log_p = -0.5 * jnp.sum(u**2, axis=1)
    log_s = -0.5 * jnp.sum(white**2, axis=1) - 0.5 * q.log_det
    log_q = jnp.logaddexp(jnp.log(_DEFENSIVE) + log_p, jnp.log1p(-_DEFENSIVE) + log_s)
    return samples._replace(u=u, log_ratio=log_p - log_q)


def _weights(method, s, s_mean, log_ratio):
    """Sample weights a (tilted minus untilted) and b (tilted) with ESS fraction (T9-T10); with the
    adaptive proposal both are self-normalised with the proposal's density ratio."""
    M = s.shape[0]
    if method == "cumulant":  # second cumulant: exp(s) linearised about its mean
        return (s - s_mean) / M, jnp.full(M, 1.0 / M), jnp.ones(())
    if log_ratio is None:
        w = jax.nn.softmax(s)
        return w - 1.0 / M, w, 1.0 / (M * jnp.sum(w**2))
    w, w0 = jax.nn.softmax(s + log_ratio), jax.nn.softmax(log_ratio)
    ess = jnp.minimum(1.0 / (M * jnp.sum(w**2)), 1.0 / (M * jnp.sum(w0**2)))  # both estimates count
    return w - w0, w, ess


def _forward_weights(method, g, Ct, samples: LayerSamples):
    """Weights a (tilted minus untilted) and ESS fraction of the tilt exp(g phi^T C~ phi) (T9)."""
    s = g * jnp.einsum("mp,pq,mq->m", samples.phi, Ct, samples.phi)
    a, _, ess = _weights(method, s, g * jnp.sum(Ct * samples.second), samples.log_ratio)
    return a, ess


def layer_forward(act: Activation, method: str, g, g_b, Ct, C_prev, samples: LayerSamples | None, ones):
    """C(l) = g <phi phi^T>_tilted + g_b o o^T (T9), o = ones in the original coordinates;
    returns (C, effective sample fraction). `samples` is None for the linear (exact) method."""
    bias = g_b * jnp.outer(ones, ones)
    if method == "linear":
        C = symmetrize(g * linalg.solve(_linear_factor(g, C_prev, Ct), C_prev)) + bias
        return C, jnp.where(jnp.all(jnp.isfinite(C)), 1.0, jnp.nan)
    assert samples is not None  # every Monte Carlo method draws them
    phi, second = samples.phi, samples.second
    a, ess = _forward_weights(method, g, Ct, samples)
    tilt = (phi * a[:, None]).T @ phi - second * jnp.sum(a)  # control variate: exact <phi phi^T>
    return symmetrize(g * (second + tilt)) + bias, ess


def proposal_update(g, Ct, samples: LayerSamples):
    """D = S - I of the next adaptive proposal: S the tilted E[u u^T], estimated from the draws of
    the current proposal with the weights of the forward average (T9) and the exact untilted
    E[u u^T] = I as control variate, so D = 0 without tilt."""
    a = _forward_weights(ADAPTIVE, g, Ct, samples)[0]
    u = samples.u
    assert u is not None  # drawn from the adaptive proposal
    return symmetrize((u * a[:, None]).T @ u)


def layer_backward(act: Activation, method: str, g, A, C_prev, samples: LayerSamples | None):
    """C~(l-1) from A = C~(l) in the tilted measure at C(l-1) (T10); returns (C~, ESS fraction)."""
    if method == "linear":
        At = symmetrize(g * linalg.solve(_linear_factor(g, C_prev, A).T, A).T)
        return At, jnp.where(jnp.all(jnp.isfinite(At)), 1.0, jnp.nan)
    assert samples is not None  # every Monte Carlo method draws them
    phi, d1, d2, second = samples[:4]
    A_phi = phi @ A
    s = g * jnp.sum(phi * A_phi, axis=1)
    a, b, ess = _weights(method, s, g * jnp.sum(A * second), samples.log_ratio)
    u = d1 * A_phi
    untilted = response(act, g, C_prev).vjp(A)  # closed-form control variate (T2)
    tilt = g * A * ((d1 * a[:, None]).T @ d1) + jnp.diag(g * jnp.sum(a[:, None] * d2 * A_phi, axis=0))
    return symmetrize(untilted * (1.0 - jnp.sum(a)) + tilt + 2.0 * g**2 * (u * b[:, None]).T @ u), ess
