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
from ..likelihood import log_evidence, predictive_moments
from ..numerics import as_key, limit_blas_threads
from ..spec import NetworkSpec
from .base import KernelEstimate, Outcome, Result, finish, prepare
from .options import PriorImportance


class ExactInfo(NamedTuple):
    """ess: effective sample size (sum w)^2 / sum w^2; n_samples: networks drawn; timings: {"total":
    wall seconds}; with test rows (else None): f_test, f_test_var, the posterior predictive mean and
    variance of y* (T21), (P_test, D), and f_test_se, f_test_var_se their SEs (delta method)."""

    ess: float
    n_samples: int
    timings: dict
    f_test: np.ndarray | None = None
    f_test_var: np.ndarray | None = None
    f_test_se: np.ndarray | None = None
    f_test_var_se: np.ndarray | None = None


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
    sw, sw2, sums = _weighted_sums(spec, X_all, Y, keys, options.batch_size)
    mean, se = {}, {}
    for name, (swx, sw2x, sw2x2) in sums.items():
        mean[name] = swx / sw
        var = (sw2x2 - 2.0 * mean[name] * sw2x + mean[name] ** 2 * sw2) / sw**2  # delta method
        se[name] = np.sqrt(np.maximum(var, 0.0))
    ess = float(sw**2 / sw2)
    predictive = _predictive_summary(sw, sw2, sums, mean, se) if len(X_all) > P else {}
    info = ExactInfo(
        ess, len(keys) * options.batch_size, {"total": time.perf_counter() - start}, **predictive
    )
    ok = ess >= options.min_ess_count
    outcome = Outcome(
        Result.success if ok else Result.ess_collapsed,
        "" if ok else f"effective sample size {ess:.1f} < min_ess_count = {options.min_ess_count}",
        method=options,
    )
    return finish("exact", mean["C"], se["C"], info, outcome, throw=throw)


def _predictive_summary(sw, sw2, sums: dict, mean: dict, se: dict) -> dict:
    """f_test = <m>, f_test_var = <s> - <m>^2 (T21) and their delta-method SEs: the variance's from
    the pseudo-values x = s - 2 <m> m, sum w^2 (x - <x>)^2 / (sum w)^2 expanded in the sums."""
    mu, s_bar = mean["m"], mean["s"]
    x_bar = s_bar - 2.0 * mu * mu
    sum_x2 = sums["s"][2] - 4.0 * mu * sums["sm"][1] + 4.0 * mu**2 * sums["m"][2]
    sum_x = sums["s"][1] - 2.0 * mu * sums["m"][1]
    var_x = (sum_x2 - 2.0 * x_bar * sum_x + x_bar**2 * sw2) / sw**2
    return dict(
        f_test=mu, f_test_var=s_bar - mu**2, f_test_se=se["m"], f_test_var_se=np.sqrt(np.maximum(var_x, 0.0))
    )


def _weighted(w, x):
    """sum_m w_m x_m over the first axis."""
    return np.einsum("m,m...->...", w, x)


def _weighted_sums(spec: NetworkSpec, X_all, Y, keys, batch: int) -> tuple:
    """sum w, sum w^2 and, for the kernels C and (with test rows) the predictive mean m and second
    moment s of y*, the sums (sum w x, sum w^2 x, sum w^2 x^2) over `batch` prior networks per key,
    with w = exp(log w - ref) the marginal likelihoods (THEORY 7) relative to a running log-weight
    reference, so weights never overflow."""
    P = len(Y)
    sw = sw2 = 0.0
    sums: dict = {}
    ref = -np.inf
    for k in keys:
        C = sample_prior_kernels(spec, X_all, batch, key=k)
        log_w = np.asarray(log_evidence(jnp.asarray(C[:, -1, :P, :P]), jnp.asarray(Y), spec.kappa))
        if log_w.max() > ref:
            scale = np.exp(ref - log_w.max())
            sw, sw2 = sw * scale, sw2 * scale**2
            sums = {n: (a * scale, b * scale**2, c * scale**2) for n, (a, b, c) in sums.items()}
            ref = log_w.max()
        w = np.exp(log_w - ref)
        values = {"C": C}
        if len(X_all) > P:
            moments = jax.vmap(predictive_moments, in_axes=(0, None, None))(C[:, -1], Y, spec.kappa)
            values["m"], values["s"] = (np.asarray(x) for x in moments)
            values["sm"] = values["s"] * values["m"]  # for the SE of the variance
        sw, sw2 = sw + w.sum(), sw2 + (w**2).sum()
        for name, x in values.items():
            new = (_weighted(w, x), _weighted(w**2, x), _weighted(w**2, x**2))
            old = sums.get(name, (0.0, 0.0, 0.0))
            sums[name] = tuple(a + b for a, b in zip(old, new, strict=True))
    return sw, sw2, sums
