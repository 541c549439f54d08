"""Exact posterior mean kernels of tiny problems by importance-weighting prior networks.

THEORY section 7: draw the hidden layers from the prior, integrate the linear readout out
analytically (f | C(L) ~ N(0, C(L)) per output), and weight each network by the marginal
likelihood N(Y; 0, C(L) + kappa I). The self-normalised average of any kernel is then its exact
posterior mean, up to Monte Carlo error, which is reported with the effective sample size.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from ..fluctuations import as_key, sample_prior_kernels
from ..metrics import cka_layers
from ..nngp import nngp_kernels
from ..numerics import check_inputs, check_targets
from ..spec import NetworkSpec


@dataclass(frozen=True)
class ExactResult:
    """Importance-sampled posterior mean kernels.

    kernels: (L+1, P', P') posterior means; se: (L+1, P', P') their standard errors (delta
    method for the self-normalised estimator); nngp: (L+1, P', P'); cka: (L+1,) CKA of the
    posterior mean kernels; ess: effective sample size (sum w)^2 / sum w^2; n_networks: draws.
    """

    kernels: np.ndarray
    se: np.ndarray
    nngp: np.ndarray
    cka: np.ndarray
    ess: float
    n_networks: int


@jax.jit
def _log_evidence(C_train, Y, kappa):
    """ln N(Y; 0, C + kappa I) per network (dropping 2 pi), C_train: (B, P, P), Y: (P, D)."""
    K = C_train + kappa * jnp.eye(C_train.shape[-1])
    chol = jnp.linalg.cholesky(K)
    alpha = jax.scipy.linalg.cho_solve((chol, True), jnp.broadcast_to(Y, C_train.shape[:1] + Y.shape))
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    return -0.5 * jnp.sum(Y * alpha, axis=(-2, -1)) - 0.5 * Y.shape[1] * logdet


def exact_posterior_kernels(
    spec: NetworkSpec, X, Y, X_test=None, *, n_networks: int = 100_000, batch: int = 4096, key=0
) -> ExactResult:
    """Exact posterior mean kernels of every layer for tiny problems (P of order 10).

    Args:
      spec: network (any depth, activation, biases); X: (P, d); Y: (P,) or (P, D);
      X_test: optional (P_test, d); n_networks: prior draws; batch: draws per compiled call.

    Returns:
      ExactResult. Check `ess`: a small ESS (sharp likelihood, small kappa) means large `se`.

    Example:
      >>> res = exact_posterior_kernels(spec, X, Y, n_networks=200_000); res.kernels[-1]
    """
    X_all = check_inputs(X, X_test)
    P = np.shape(X)[0]
    Y = check_targets(Y, P, spec.n_out)
    keys = jax.random.split(as_key(key), -(-n_networks // batch))
    sums = None  # sum w, sum w^2, sum w C, sum w^2 C, sum w^2 C^2 with w = exp(log w - ref)
    ref = -np.inf  # running log-weight reference, so weights never overflow
    for k in keys:
        C = sample_prior_kernels(spec, X_all, batch, key=k)
        log_w = np.asarray(_log_evidence(jnp.asarray(C[:, -1, :P, :P]), jnp.asarray(Y), spec.kappa))
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
    sw, sw2, swc, sw2c, sw2c2 = sums
    mean = swc / sw
    var = (sw2c2 - 2.0 * mean * sw2c + mean**2 * sw2) / sw**2  # delta method, self-normalised IS
    return ExactResult(
        kernels=mean,
        se=np.sqrt(np.maximum(var, 0.0)),
        nngp=nngp_kernels(spec, X, X_test),
        cka=cka_layers(mean, Y),
        ess=float(sw**2 / sw2),
        n_networks=len(keys) * batch,
    )
