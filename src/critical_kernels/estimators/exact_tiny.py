"""Exact posterior mean kernels of tiny problems by importance-weighting prior networks.

THEORY section 7: draw the hidden layers from the prior, integrate the linear readout out
analytically (f | C(L) ~ N(0, C(L)) per output), and weight each network by the marginal
likelihood N(Y; 0, C(L) + kappa I). The self-normalised average of any kernel is then its exact
posterior mean, up to Monte Carlo error, which is reported with the effective sample size.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..fluctuations import sample_prior_kernels
from ..likelihood import batched_predictive_moments, log_evidence
from ..numerics import as_key, limit_blas_threads
from ..predictive import from_weighted_sums
from ..spec import NetworkSpec
from .base import KernelEstimate, Outcome, Result, finish, prepare
from .options import PriorImportance


class ExactInfo(NamedTuple):
    """ess: effective sample size (sum w)^2 / sum w^2; n_samples: networks drawn; timings: {"total":
    wall seconds}."""

    ess: float
    n_samples: int
    timings: dict


@limit_blas_threads
def exact_posterior_kernels(
    spec: NetworkSpec,
    X,
    Y,
    X_test=None,
    *,
    options: PriorImportance = PriorImportance(),
    key=0,
    throw: bool = True,
) -> KernelEstimate:
    """Exact posterior mean kernels of every layer for tiny problems (P of order 10).

    Args:
      spec: network (any depth, activation, biases); X: (P, d); Y: (P,) or (P, D);
      X_test: optional (P_test, d).
      options: PriorImportance(n_samples, batch_size, min_ess_count): prior networks drawn (rounded
        up to whole batches), networks per compiled call, and the effective sample size below which the
        standard errors themselves are unreliable and the result is a failure (ess_collapsed).
      key: int or PRNGKey; throw: raise on failure (default).

    Returns:
      KernelEstimate "exact", method "prior importance": posterior means, se by the delta method for
      the self-normalised estimator (estimates None), info ExactInfo; with test rows the predictive
      (T21) with delete-one-block jackknife SEs.

    Example:
      >>> import critical_kernels as ck
      >>> data = ck.datasets.xor(n_train=4, n_test=0, dim=2)
      >>> spec = ck.NetworkSpec(depth=1, width=2, activation="tanh", kappa=0.5)
      >>> est = exact_posterior_kernels(spec, data.X, data.Y, options=ck.PriorImportance(20_000))
      >>> est.ok, est.kernels.shape, est.info.ess > 100  # C0, C1 on 4 inputs; Kish ESS of the weights
      (True, (2, 4, 4), True)
    """
    start = time.perf_counter()
    _, X_all, Y, P = prepare(spec, X, Y, X_test, options=(options, PriorImportance))
    keys = jax.random.split(as_key(key), -(-options.n_samples // options.batch_size))
    sums = _weighted_sums(spec, X_all, Y, keys, options.batch_size)
    sw, sw2 = sums.sw, sums.sw2
    mean = sums.swC / sw
    # delta method for the self-normalised mean: sum w^2 (C - mean)^2 / (sum w)^2, expanded in the sums
    var = (sums.sw2C2 - 2.0 * mean * sums.sw2C + mean**2 * sw2) / sw**2
    ess = float(sw**2 / sw2)
    info = ExactInfo(ess, len(keys) * options.batch_size, {"total": time.perf_counter() - start})
    ok = ess >= options.min_ess_count
    outcome = Outcome(
        Result.success if ok else Result.ess_collapsed,
        "" if ok else f"effective sample size {ess:.1f} < min_ess_count = {options.min_ess_count}",
        method=options,
    )
    predictive = from_weighted_sums(sums.block_sw, sums.block_swm, sums.block_sws) if len(X_all) > P else None
    se = np.sqrt(np.maximum(var, 0.0))
    return finish("exact", mean, se, info, outcome, predictive=predictive, throw=throw)


_SPLIT = 4  # jackknife blocks of the predictive per batch of networks (batch_size >= 4)


class _Sums(NamedTuple):
    """The weighted sums over all prior networks on one common weight scale: sum w, sum w^2, and
    sum w C, sum w^2 C, sum w^2 C^2 (L+1, P', P'); per block (B = _SPLIT per batch) sum w (B,) and,
    with test rows, sum w m, sum w s (B, P_test, D) of the network's predictive mean m and second
    moment s (T21), else empty."""

    sw: float
    sw2: float
    swC: np.ndarray
    sw2C: np.ndarray
    sw2C2: np.ndarray
    block_sw: np.ndarray
    block_swm: np.ndarray
    block_sws: np.ndarray


def _weighted_sums(spec: NetworkSpec, X_all, Y, keys, batch: int) -> _Sums:
    """The weighted sums of `batch` prior networks per key, w = exp(log w - max) the marginal
    likelihoods (THEORY 7) relative to each batch's largest, rescaled to the overall largest at the
    end so weights never overflow."""
    P, batches, blocks, refs = len(Y), [], [], []
    for k in keys:
        C = sample_prior_kernels(spec, X_all, batch, key=k)
        log_w = np.asarray(log_evidence(jnp.asarray(C[:, -1, :P, :P]), jnp.asarray(Y), spec.kappa))
        refs.append(log_w.max())
        w = np.exp(log_w - refs[-1])
        m = s = np.zeros((batch, 0))
        if len(X_all) > P:
            m, s = (np.asarray(x) for x in batched_predictive_moments(C[:, -1], Y, spec.kappa))
        batches.append((w.sum(), (w**2).sum(), _weighted(w, C), _weighted(w**2, C), _weighted(w**2, C**2)))
        for idx in np.array_split(np.arange(batch), _SPLIT):
            blocks.append((w[idx].sum(), _weighted(w[idx], m[idx]), _weighted(w[idx], s[idx])))
    scale = np.exp(np.asarray(refs) - max(refs))
    totals = (
        np.einsum("k,k...->...", scale**power, np.stack([b[i] for b in batches]))
        for i, power in enumerate((1, 2, 1, 2, 2))  # each sum's power of w
    )
    per_block = (np.stack([b[i] for b in blocks]) for i in range(3))
    block_scale = np.repeat(scale, _SPLIT)
    return _Sums(*totals, *(x * block_scale.reshape((-1,) + (1,) * (x.ndim - 1)) for x in per_block))


def _weighted(w, x):
    """sum_m w_m x_m over the first axis."""
    return np.einsum("m,m...->...", w, x)
