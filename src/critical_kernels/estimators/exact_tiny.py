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
from ..likelihood import log_evidence
from ..numerics import as_key, limit_blas_threads
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
      the self-normalised estimator (estimates None), info ExactInfo.

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
    sw, sw2, swc, sw2c, sw2c2 = _weighted_sums(spec, X_all, Y, keys, options.batch_size)
    mean = swc / sw
    var = (sw2c2 - 2.0 * mean * sw2c + mean**2 * sw2) / sw**2  # delta method, self-normalised IS
    ess = float(sw**2 / sw2)
    info = ExactInfo(ess, len(keys) * options.batch_size, {"total": time.perf_counter() - start})
    ok = ess >= options.min_ess_count
    outcome = Outcome(
        Result.success if ok else Result.ess_collapsed,
        "" if ok else f"effective sample size {ess:.1f} < min_ess_count = {options.min_ess_count}",
        method=options,
    )
    return finish("exact", mean, np.sqrt(np.maximum(var, 0.0)), info, outcome, throw=throw)


def _weighted_sums(spec: NetworkSpec, X_all, Y, keys, batch: int) -> list:
    """sum w, sum w^2, sum w C, sum w^2 C, sum w^2 C^2 over `batch` prior networks per key, with
    w = exp(log w - ref) the marginal likelihoods (THEORY 7) relative to a running log-weight
    reference, so weights never overflow."""
    P = len(Y)
    sums, ref = None, -np.inf
    for k in keys:
        C = sample_prior_kernels(spec, X_all, batch, key=k)
        log_w = np.asarray(log_evidence(jnp.asarray(C[:, -1, :P, :P]), jnp.asarray(Y), spec.kappa))
        if log_w.max() > ref:
            if sums is not None:
                scale = np.exp(ref - log_w.max())
                sums = [s * scale ** (1 if i in (0, 2) else 2) for i, s in enumerate(sums)]
            ref = log_w.max()
        w = np.exp(log_w - ref)
        w2 = w**2
        batch_sums = [
            w.sum(),
            w2.sum(),
            np.einsum("m,m...->...", w, C),
            np.einsum("m,m...->...", w2, C),
            np.einsum("m,m...->...", w2, C**2),
        ]
        sums = batch_sums if sums is None else [a + b for a, b in zip(sums, batch_sums, strict=True)]
    assert sums is not None, "no batches"
    return sums
