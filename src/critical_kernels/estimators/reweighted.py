"""Saddle-point importance sampling: posterior mean kernels by reweighting the tilted chain (T17).

Take the saddle point (C*, C~*) of T8 (`solve_map`). q is the law of a *finite* network whose layer
l (l = 1..L) has N neurons h_i in R^P' (train + test rows) drawn i.i.d. from the tilted measure

  dP_l(h) ∝ N(h; 0, C_emp(l-1)) exp(g_l phi(h)^T C~*(l) phi(h)),

C_emp(0) = C0, C_emp(l) = (g_l/N) sum_i phi(h_i) phi(h_i)^T + g_b[l] 11^T. C~* is zero on test rows, so
only the training block of phi tilts. The prior draws the same chain with C~ = 0, hence exactly

  p(C | Y) = q(C) e^R / E_q[e^R],
  R = ln p(Y | C_emp(L))
      - sum_l [ sum_i g_l phi(h_(l,i))^T C~*(l) phi(h_(l,i)) - N W~_l(C~*(l) | C_emp(l-1)) ],
  W~_l(C~ | C) = ln E_(h ~ N(0, C)) exp(g_l phi^T C~ phi),

and <C(l)>_post ≈ sum_n w_n C_n(l) / sum_n w_n, w = exp(R - max R), on train and test rows.

Linear phi: with A = C~*(l) (zero outside the training block) and S = C^(1/2) A C^(1/2) = U diag(s) U^T
(C^(1/2) the symmetric PSD square root of C = C_emp(l-1) on all P' rows),

  Sigma = (C^-1 - 2g A)^-1 = C^(1/2) (I - 2g S)^-1 C^(1/2),  h = C^(1/2) U diag((1 - 2g s)^(-1/2)) z,
  W~ = -(1/2) ln det(I - 2g C A) = -(1/2) sum_k ln(1 - 2g s_k),

valid (normalisable) while max_k 2g s_k < 1. The middle form never inverts C, so test rows (where A
vanishes) and singular C (N < P' without biases) need no special care: conditioned on the training
rows the test rows keep their prior conditional law, which this joint draw reproduces exactly.

Nonlinear phi: each neuron is drawn by independence Metropolis-Hastings with proposal N(0, C) (target /
proposal ∝ exp(g t(h)), t = phi^T A phi, so the acceptance ratio is exp(g (t' - t))), `n_mh` steps
started from a proposal draw; W~ by Monte Carlo with common random numbers (the same z_m, m = 1..M,
for every network): W~ = ln mean_m exp(g t(z_m C^(1/2))) by log-sum-exp. Both are approximations (a
finite chain is not exactly P_l; ln of a mean is biased by O(1/M)), unlike the linear case.

Standard errors: delete-one-batch jackknife of the ratio estimator over `n_batches` batches of
networks. Cost per network and layer O(P'^3 + n_mh N P'^2 + M P'^2).
"""

from __future__ import annotations

import math
import time
from functools import lru_cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError
from ..likelihood import log_evidence
from ..nngp import input_kernel
from ..numerics import as_key, check_inputs, check_targets, limit_blas_threads, symmetrize
from ..spec import NetworkSpec
from .base import KernelEstimate, Result, finish
from .map import solve_map
from .options import TemperedSMC
from .smc import run_smc

# Below ~50 effective networks the estimate is not trustworthy and neither is its error bar: the
# self-normalised ratio has an O(1/ESS) bias of the order of its standard error, and with 16
# jackknife batches each batch then carries ~3 effective networks, so the delete-one-batch
# jackknife is dominated by the few heaviest weights and understates the error.
DEFAULT_MIN_ESS = 50.0
TEMPERING = ("auto", "always", "never")


def _ess_advice(ess: float, n_used: int, min_ess: float, var_R: float) -> str:
    """What to do when the ESS is below min_ess. The ESS grows in proportion to the networks drawn,
    so min_ess needs about n min_ess / ESS of them; past ~10^6 (log-normal weights: ESS/n ~ e^-Var R,
    Var R >~ 10) the saddle point's measure is too far from the posterior for reweighting."""
    need = math.ceil(n_used * min_ess / max(ess, 1e-300))
    if need <= 1_000_000:
        return f"draw about {need} networks (n_samples; the ESS grows in proportion)"
    return (
        f"about {need:.1e} networks would be needed (Var R = {var_R:.3g}): the saddle point is too far "
        "from the posterior here; use the sampled networks (sample_posterior), a larger width or kappa"
    )


class ReweightedInfo(NamedTuple):
    """Diagnostics of `reweighted_kernels`.

    ess: Kish effective sample size (sum w)^2 / sum w^2 of the n_samples networks;
    var_log_weight: Var R over the drawn networks; n_samples: networks used (a multiple of n_batches);
    n_batches: jackknife batches; acceptance: (L,) Metropolis-Hastings acceptance rate per layer
    (ones for linear phi, drawn exactly); saddle_ok: whether the MAP saddle point converged;
    seconds: wall time (including the saddle solve when it was not passed in);
    jackknife_kernels: (B, L+1, P', P') leave-one-out estimates K_(-b) (None on failure): the SE of any
    smooth function f of the kernels (e.g. the CKA) is sqrt((B-1)/B sum_b (f(K_(-b)) - mean_b f(K_(-b)))^2),
    B = n_batches (plain reweighting) or the number of SMC runs;
    method: "importance" (plain reweighting) or "tempered SMC" (which produced the kernels);
    smc_runs: one SMCRun per tempered SMC run (temperature ladder, acceptance, final ESS), else ().
    ess, var_log_weight and n_samples always describe the plain reweighting (NaN / 0 if it did not run).
    """

    ess: float
    var_log_weight: float
    n_samples: int
    n_batches: int
    acceptance: np.ndarray
    saddle_ok: bool
    seconds: float
    jackknife_kernels: np.ndarray | None = None
    method: str = "importance"
    smc_runs: tuple = ()


def _tilt(h_train, A):
    """t_i = h_i^T A h_i for rows h_i (..., P) of training-row values."""
    return jnp.einsum("...a,ab,...b->...", h_train, A, h_train)


def _train_coordinates(F, P):
    """For C = F F^T (F: P' x m, train rows first): Q (m x r), T (r x P) with F_train^T = Q T, r = min(m, P).

    A neuron h = F zeta, zeta ~ N(0, I_m), has training rows h_train = T^T w with w = Q^T zeta ~ N(0, I_r):
    the tilt only sees w. Given w, zeta = Q w + (I - Q Q^T) xi (xi ~ N(0, I_m)) completes the draw on
    every row exactly (the test rows keep their conditional law), and no P' x P' factorisation of C
    (possibly singular) is needed.
    """
    return jnp.linalg.qr(F[:P].T, mode="reduced")


def _complete(F, Q, w, key):
    """h (N, P') on every row from the training coordinates w (N, r)."""
    xi = jax.random.normal(key, (w.shape[0], F.shape[1]))
    zeta = w @ Q.T + xi - (xi @ Q) @ Q.T
    return zeta @ F.T


def _layer_linear(key, F, A, g, N):
    """Exact tilted draw of N linear neurons: h (N, P'), sum_i g t_i, W~, normalisable flag.

    In training coordinates the tilted law of w is N(0, (I - 2g S)^-1), S = T A T^T = U diag(s) U^T, and
    W~ = -(1/2) sum_k ln(1 - 2g s_k) (S has the nonzero eigenvalues of A C_train)."""
    P = A.shape[0]
    Q, T = _train_coordinates(F, P)
    s, U = jnp.linalg.eigh(symmetrize(T @ A @ T.T))
    one_minus = 1.0 - 2.0 * g * s
    ok = jnp.all(one_minus > 0)
    safe = jnp.where(one_minus > 0, one_minus, 1.0)
    k0, k1 = jax.random.split(key)
    w = (jax.random.normal(k0, (N, len(s))) * jax.lax.rsqrt(safe)) @ U.T
    h = _complete(F, Q, w, k1)
    tilt = g * jnp.sum(_tilt(w @ T, A))
    return h, tilt, -0.5 * jnp.sum(jnp.log(safe)), ok, jnp.asarray(1.0)


def _layer_mh(fn, n_mh, key, F, A, g, N, zw):
    """Independence MH draw of N neurons from the tilted measure in training coordinates (proposal
    N(0, I_r), acceptance exp(g (t' - t))), completed on every row; W~ by MC with CRN z_w (M, P)."""
    P = A.shape[0]
    Q, T = _train_coordinates(F, P)
    r = T.shape[0]
    k0, k1, k2 = jax.random.split(key, 3)
    w = jax.random.normal(k0, (N, r))
    t = _tilt(fn(w @ T), A)

    def step(carry, k):
        w, t, acc = carry
        ka, kb = jax.random.split(k)
        wp = jax.random.normal(ka, w.shape)
        tp = _tilt(fn(wp @ T), A)
        accept = jnp.log(jax.random.uniform(kb, t.shape)) < g * (tp - t)
        w = jnp.where(accept[:, None], wp, w)
        t = jnp.where(accept, tp, t)
        return (w, t, acc + jnp.mean(accept)), None

    (w, t, acc), _ = jax.lax.scan(step, (w, t, 0.0), jax.random.split(k1, n_mh))
    tw = g * _tilt(fn(zw[:, :r] @ T), A)
    W = jax.scipy.special.logsumexp(tw) - math.log(zw.shape[0])
    return _complete(F, Q, w, k2), g * jnp.sum(t), W, jnp.asarray(True), acc / max(n_mh, 1)


@lru_cache(maxsize=32)
def _chunk_fn(act, gains, bias, kappa, N, P, linear, n_mh):
    """Compiled: a chunk of networks -> (R, per-chunk max, sum w, sum w C, acceptance, ok count)."""
    L = len(gains)

    def network(key, F0, conj, Y, zw):
        F, kernels, penalty = F0, [F0 @ F0.T], 0.0
        accs, ok = [], jnp.asarray(True)
        keys = jax.random.split(key, L)
        for l in range(L):
            g, A = gains[l], conj[l][:P, :P]
            if linear:
                h, tilt, W, good, acc = _layer_linear(keys[l], F, A, g, N)
            else:
                h, tilt, W, good, acc = _layer_mh(act.fn, n_mh, keys[l], F, A, g, N, zw[l])
            # C_emp = F F^T with the explicit factor F = [sqrt(g/N) phi(h)^T, sqrt(g_b) 1]
            F = jnp.concatenate(
                [math.sqrt(g / N) * act.fn(h).T, jnp.full((h.shape[1], 1), math.sqrt(bias[l + 1]))], axis=1
            )
            kernels.append(symmetrize(F @ F.T))
            penalty = penalty + tilt - N * W
            accs.append(acc)
            ok = ok & good
        R = log_evidence(kernels[-1][:P, :P], Y, kappa) - penalty
        R = jnp.where(ok, R, -jnp.inf)
        return R, jnp.stack(kernels), jnp.stack(accs), ok

    @jax.jit
    def chunk(keys, F0, conj, Y, zw):
        R, K, acc, ok = jax.vmap(network, in_axes=(0, None, None, None, None))(keys, F0, conj, Y, zw)
        m = jnp.max(R)
        w = jnp.exp(R - m)
        return R, m, jnp.sum(w), jnp.einsum("n,nlab->lab", w, K), jnp.mean(acc, axis=0), jnp.sum(~ok)

    return chunk


def _check_count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


@limit_blas_threads
def reweighted_kernels(
    spec: NetworkSpec,
    X,
    Y,
    X_test=None,
    *,
    n_samples: int = 2048,
    n_batches: int = 16,
    min_ess: float = DEFAULT_MIN_ESS,
    saddle: KernelEstimate | None = None,
    n_mh: int = 20,
    n_w: int = 4096,
    chunk: int = 64,
    tempering: str = "auto",
    smc: TemperedSMC = TemperedSMC(),
    key=0,
    throw: bool = True,
) -> KernelEstimate:
    """Posterior mean kernels by saddle-point importance sampling (T17).

    Args:
      spec: network (one output); X: (P, d); Y: (P,) or (P, 1); X_test: optional (P_test, d).
      n_samples: networks drawn from the tilted chain q (rounded down to a multiple of n_batches);
      n_batches: jackknife batches (>= 2); min_ess: below this Kish ESS the result is ess_collapsed;
      saddle: an already computed `solve_map` estimate on the same X, Y, X_test (else solved here);
      n_mh: Metropolis-Hastings steps per neuron (nonlinear phi); n_w: Monte Carlo points M for W~
        (nonlinear phi); chunk: networks per compiled call (memory bound); key: int or PRNGKey;
      throw: raise on failure (default).

    Returns:
      KernelEstimate "reweighted": kernels (L+1, P', P') on train + test rows (layer 0 the input kernel),
      se the delete-one-batch jackknife standard errors (zero in layer 0), info ReweightedInfo. If the
      saddle point did not converge the kernels are NaN and the result the MAP's failure.

    Example:
      >>> est = reweighted_kernels(NetworkSpec(depth=2, width=30, activation="linear", g_b=0.1), X, Y)
      >>> est.kernels, est.se, est.info.ess
    """
    start = time.perf_counter()
    n_samples = _check_count("n_samples", n_samples, 1)
    n_batches = _check_count("n_batches", n_batches, 2)
    n_mh = _check_count("n_mh", n_mh, 1)
    n_w = _check_count("n_w", n_w, 1)
    chunk = _check_count("chunk", chunk, 1)
    if n_samples < n_batches:
        raise InputError(f"n_samples: must be at least n_batches = {n_batches}, got {n_samples}")
    if not (isinstance(min_ess, (int, float)) and min_ess >= 0):
        raise InputError(f"min_ess: must be a number >= 0, got {min_ess!r}")
    if not isinstance(spec, NetworkSpec):
        raise InputError(f"spec: expected a NetworkSpec, got {type(spec).__name__}")
    if tempering not in TEMPERING:
        raise InputError(f"tempering: expected one of {', '.join(map(repr, TEMPERING))}, got {tempering!r}")
    if not isinstance(smc, TemperedSMC):
        raise InputError(f"smc: expected TemperedSMC(...), got {smc!r}")
    X_all = check_inputs(X, X_test)
    P, Pa, L, N = np.shape(X)[0], X_all.shape[0], spec.depth, spec.width
    Y = check_targets(Y, P, spec.n_out)
    linear = spec.act.name == "linear"

    if saddle is None:
        saddle = solve_map(spec, X, Y, X_test, key=key, throw=False)
    conj = getattr(getattr(saddle, "info", None), "conj_kernels", None)
    if conj is None or np.shape(conj) != (L + 1, Pa, Pa):
        raise InputError(
            f"saddle: expected a solve_map estimate with info.conj_kernels of shape {(L + 1, Pa, Pa)}, "
            f"got {None if conj is None else np.shape(conj)}"
        )

    def info(ess=float("nan"), var=float("nan"), n=0, acc=None, loo=None, **smc_fields):
        acc = np.full(L, np.nan) if acc is None else acc
        seconds = time.perf_counter() - start
        return ReweightedInfo(ess, var, n, n_batches, acc, bool(saddle.ok), seconds, loo, **smc_fields)

    if not saddle.ok:
        nan = np.full((L + 1, Pa, Pa), np.nan)
        detail = (
            f"the saddle point (MAP) did not converge, so there is nothing to reweight ({saddle.message})"
        )
        return finish("reweighted", nan, nan, info(), result=saddle.result, detail=detail, throw=throw)

    if tempering == "always":
        return _tempered(spec, X_all, Y, conj, key, smc, info, throw)
    per_batch = n_samples // n_batches
    n_used = per_batch * n_batches
    size = max(d for d in range(1, min(chunk, per_batch) + 1) if per_batch % d == 0)
    fn = _chunk_fn(spec.act, spec.gains, spec.bias_vars, float(spec.kappa), N, P, linear, n_mh)
    k_draw, k_w = jax.random.split(as_key(key))
    C0 = jnp.asarray(input_kernel(spec, X_all))
    d = X_all.shape[1]  # C0 = F0 F0^T, F0 = [sqrt(g_in/d) X, sqrt(g_b0) 1]
    F0 = jnp.asarray(
        np.hstack([math.sqrt(spec.g_in / d) * X_all, np.full((Pa, 1), math.sqrt(spec.bias_vars[0]))])
    )
    conj_j = jnp.asarray(conj[1:])
    Yj = jnp.asarray(Y)
    zw = jnp.zeros((L, 1, P)) if linear else jax.random.normal(k_w, (L, n_w, P))

    keys = jax.random.split(k_draw, n_used).reshape(n_batches, per_batch // size, size, -1)
    R_all, maxes, sw, swk, accs, bad = [], [], [], [], [], 0
    for b in range(n_batches):
        for c in range(per_batch // size):
            R, m, s, sk, acc, nbad = fn(keys[b, c], F0, conj_j, Yj, zw)
            R_all.append(np.asarray(R))
            maxes.append(float(m))
            sw.append(float(s))
            swk.append(np.asarray(sk))
            accs.append(np.asarray(acc))
            bad += int(nbad)
    R_all = np.concatenate(R_all)
    acceptance = np.mean(accs, axis=0) if not linear else np.ones(L)
    finite = np.isfinite(R_all)
    if bad or not finite.all():
        nan = np.full((L + 1, Pa, Pa), np.nan)
        detail = (
            f"{bad} of {n_used} drawn networks had a non-normalisable tilted measure "
            f"(1 - 2g s <= 0) or a non-finite log weight"
        )
        return finish(
            "reweighted",
            nan,
            nan,
            info(acc=acceptance, n=n_used),
            result=Result.not_positive_definite,
            detail=detail,
            throw=throw,
        )

    # combine chunks on a common scale, then per-batch sums
    top = max(maxes)
    scale = np.exp(np.asarray(maxes) - top)
    n_chunks = per_batch // size
    sw_b = (np.asarray(sw) * scale).reshape(n_batches, n_chunks).sum(axis=1)
    swk_b = (np.asarray(swk) * scale[:, None, None, None]).reshape((n_batches, n_chunks) + swk[0].shape)
    swk_b = swk_b.sum(axis=1)
    kernels = swk_b.sum(axis=0) / sw_b.sum()
    # delete-one-batch jackknife of the ratio estimator
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN where one batch holds all the weight
        loo = (swk_b.sum(axis=0)[None] - swk_b) / (sw_b.sum() - sw_b)[:, None, None, None]
    se = np.sqrt((n_batches - 1) / n_batches * np.sum((loo - loo.mean(axis=0)) ** 2, axis=0))
    kernels[0], se[0], loo[:, 0] = np.asarray(C0), 0.0, np.asarray(C0)

    w = np.exp(R_all - R_all.max())
    ess = float(w.sum() ** 2 / np.sum(w**2))
    var_R = float(np.var(R_all))
    result, detail = Result.success, ""
    if ess < min_ess and tempering == "auto":
        return _tempered(spec, X_all, Y, conj, key, smc, partial(info, ess, var_R, n_used, acceptance), throw)
    if ess < min_ess:
        result = Result.ess_collapsed
        detail = (
            f"effective sample size {ess:.3g} < min_ess = {min_ess:.3g} of {n_used} networks "
            f"(Var R = {var_R:.3g})"
        )
    return finish(
        "reweighted",
        kernels,
        se,
        info(ess, var_R, n_used, acceptance, loo),
        result=result,
        detail=detail,
        advice=_ess_advice(ess, n_used, min_ess, var_R) if result is Result.ess_collapsed else None,
        throw=throw,
    )


def _tempered(spec, X_all, Y, conj, key, options, info, throw) -> KernelEstimate:
    """Tempered SMC from q to the posterior (smc.py): the mean of options.n_runs independent runs, with
    the leave-one-run-out means as jackknife set. Fails (diagnostics_failed) when a run did not reach
    beta = 1 within options.max_temperatures or its final HMC acceptance fell below 0.1."""
    per_run, runs = run_smc(spec, X_all, Y, conj, jax.random.fold_in(as_key(key), 1), options)
    B = len(per_run)
    C0 = np.broadcast_to(np.asarray(input_kernel(spec, X_all)), (B, 1) + per_run.shape[-2:])
    per_run = np.concatenate([C0, per_run], axis=1)
    kernels = per_run.mean(axis=0)
    loo = (per_run.sum(axis=0)[None] - per_run) / (B - 1)
    se = np.sqrt((B - 1) / B * np.sum((loo - loo.mean(axis=0)) ** 2, axis=0))
    problems = [
        f"run {i}: stopped at beta = {r.temperatures[-1]:.3g} after {len(r.temperatures) - 1} temperatures"
        for i, r in enumerate(runs)
        if not r.reached
    ]
    problems += [
        f"run {i}: final HMC acceptance {r.acceptance[-1]:.2f} < 0.1"
        for i, r in enumerate(runs)
        if r.acceptance[-1] < 0.1
    ]
    return finish(
        "reweighted",
        kernels,
        se,
        info(loo=loo, method="tempered SMC", smc_runs=tuple(runs)),
        result=Result.diagnostics_failed if problems else Result.success,
        detail="tempered SMC: " + "; ".join(problems) if problems else "",
        advice="more temperatures (max_temperatures), more MCMC moves (n_mcmc) or a smaller step_size"
        if problems
        else None,
        throw=throw,
    )
