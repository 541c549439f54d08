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
proposal ∝ exp(g t(h)), t = phi^T A phi, so the acceptance ratio is exp(g (t' - t))) started from a
proposal draw, for as many steps as the sampler's convergence bound asks (`_mh_length`); W~ by Monte
Carlo with common random numbers (the same z_m, m = 1..M, for every network): W~ = ln mean_m
exp(g t(z_m C^(1/2))) by log-sum-exp. Both are approximations (a finite chain is not exactly P_l; ln
of a mean is biased by O(1/M)), unlike the linear case.

Standard errors: delete-one-batch jackknife of the ratio estimator over `n_batches` batches of
networks. Cost per network and layer O(P'^3 + n N P'^2 + M P'^2) for n MH steps.
"""

from __future__ import annotations

import math
import time
from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import linalg, progress
from ..errors import InputError, warn_user
from ..likelihood import batched_predictive_moments, log_evidence
from ..metrics import cka_layers, cka_layers_se, se_target
from ..nngp import input_kernel, nngp_kernels
from ..numerics import as_key, limit_blas_threads, ratio_jackknife, standard_error, symmetrize
from ..predictive import Predictive, from_moments, from_weighted_sums
from ..spec import NetworkSpec
from .base import Estimates, KernelEstimate, Outcome, Problem, Result, finish, prepare
from .map import MAPInfo, solve_map
from .options import Fallback, ImportanceSampling, Reweighting, SecondCumulant, TemperedSMC
from .smc import SMCRun, run_smc


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
    timings: {"total": wall seconds} (including the saddle solve when it was not passed in);
    smc_runs: one SMCRun per tempered SMC run (temperature ladder, acceptance, final ESS), else ();
    rtol_met: whether the SE reached Reweighting.rtol (None without rtol, or when it did not run);
    log_evidence: ln mean e^R, which estimates ln p(Y | X) of the finite network (E_q e^R = p(Y | X),
    exactly for linear phi; W~ by Monte Carlo otherwise), and log_evidence_se its delta-method SE
    sqrt(1/ESS - 1/n). Against an exact evidence (T18) it diagnoses the weights: a heavy tail that the
    draws have not reached shows as ln mean e^R too low by many SE.
    mh_steps: (L,) the most Metropolis-Hastings steps any network ran in each layer (`_mh_length`:
    from n_mh up to max_mh, where the cap flags chains that may not have converged; zeros for linear
    phi; None if the plain reweighting did not run).
    ess, var_log_weight, n_samples and log_evidence always describe the plain reweighting (NaN / 0 if it
    did not run).
    The leave-one-out estimates behind the SE are the estimate's `estimates` (kind "jackknife").
    """

    ess: float
    var_log_weight: float
    n_samples: int
    n_batches: int
    acceptance: np.ndarray
    saddle_ok: bool
    timings: dict
    smc_runs: tuple[SMCRun, ...] = ()
    rtol_met: bool | None = None
    log_evidence: float = float("nan")
    log_evidence_se: float = float("nan")
    mh_steps: np.ndarray | None = None


class _Plain(NamedTuple):
    """The plain reweighting pass (T17): kernels, their jackknife SE and leave-one-batch-out
    estimates loo (all None when a network failed), Kish ESS and Var R (NaN then), networks used,
    (L,) MH acceptance, and the count of networks with a non-normalisable tilted measure."""

    kernels: np.ndarray | None
    se: np.ndarray | None
    loo: np.ndarray | None
    ess: float
    var_R: float
    n_used: int
    acceptance: np.ndarray
    bad: int
    rtol_met: bool | None = None
    predictive: Predictive | None = None  # on the test rows (`_predictive_jackknife`)
    log_evidence: tuple[float, float] = (float("nan"), float("nan"))  # ln mean e^R and its SE
    mh_steps: np.ndarray | None = None  # (L,) the most MH steps a network's layer ran


class _AtSaddle(NamedTuple):
    """What both passes read: the validated problem (all rows X_all, training rows first) and the
    saddle point's conjugate kernels conj = C~*(0..L) (L+1, P', P')."""

    problem: Problem
    conj: np.ndarray


class _Report(NamedTuple):
    """What every ReweightedInfo records besides the pass that ran; start: perf_counter at the call."""

    start: float
    n_batches: int
    depth: int
    n_rows: int
    saddle_ok: bool

    def info(self, plain: _Plain | None = None, smc_runs: tuple = ()) -> ReweightedInfo:
        nan = float("nan")
        if plain is None:  # the plain reweighting did not run
            plain = _Plain(None, None, None, nan, nan, 0, np.full(self.depth, nan), 0)
        return ReweightedInfo(
            plain.ess,
            plain.var_R,
            plain.n_used,
            self.n_batches,
            plain.acceptance,
            self.saddle_ok,
            {"total": time.perf_counter() - self.start},
            smc_runs,
            plain.rtol_met,
            *plain.log_evidence,
            plain.mh_steps,
        )

    def nan_kernels(self) -> np.ndarray:
        return np.full((self.depth + 1, self.n_rows, self.n_rows), np.nan)


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
    return linalg.qr(F[:P].T)


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
    s, U = linalg.eigh(symmetrize(T @ A @ T.T))
    one_minus = 1.0 - 2.0 * g * s
    ok = jnp.all(one_minus > 0)
    safe = jnp.where(one_minus > 0, one_minus, 1.0)
    k0, k1 = jax.random.split(key)
    w = (jax.random.normal(k0, (N, len(s))) * jax.lax.rsqrt(safe)) @ U.T
    h = _complete(F, Q, w, k1)
    tilt = g * jnp.sum(_tilt(w @ T, A))
    return h, tilt, -0.5 * jnp.sum(jnp.log(safe)), ok, jnp.asarray(1.0), jnp.int32(0)


class MHSteps(NamedTuple):
    """How long each neuron's independence Metropolis-Hastings chain runs (traced: one compilation
    serves every setting)."""

    least: jnp.ndarray | int  # Reweighting.n_mh
    tol: jnp.ndarray | float  # Reweighting.mh_tol
    most: jnp.ndarray | int  # Reweighting.max_mh


def _mh_length(tw, W, N: int, steps: MHSteps):
    """Steps after which an independence sampler is within mh_tol of its target in total variation,
    summed over a layer's N neurons: N (1 - 1/w*)^n <= tol, w* = sup target / proposal (Mengersen &
    Tweedie 1996), here the largest normalised tilt weight exp(g t_m - W~) over the n_w Monte Carlo
    points tw = g t_m (a lower bound of the sup for unbounded phi); within [least, most]."""
    w_star = jnp.maximum(jnp.exp(jnp.max(tw) - W), 1.0 + 1e-12)
    rate = jnp.log1p(-1.0 / w_star)  # ln(1 - 1/w*) < 0
    need = jnp.ceil(jnp.log(steps.tol / N) / rate)
    return jnp.clip(need, steps.least, steps.most).astype(jnp.int32)


def _layer_mh(fn, steps: MHSteps, key, F, A, g, N, zw):
    """Independence MH draw of N neurons from the tilted measure in training coordinates (proposal
    N(0, I_r), acceptance exp(g (t' - t))), `_mh_length` steps, completed on every row; W~ by MC with
    CRN z_w (M, P). Returns h, sum_i g t_i, W~, True, the acceptance rate and the steps run."""
    P = A.shape[0]
    Q, T = _train_coordinates(F, P)
    r = T.shape[0]
    k0, k1, k2 = jax.random.split(key, 3)
    tw = g * _tilt(fn(zw[:, :r] @ T), A)
    W = jax.scipy.special.logsumexp(tw) - math.log(zw.shape[0])
    n_steps = _mh_length(tw, W, N, steps)
    w = jax.random.normal(k0, (N, r))
    t = _tilt(fn(w @ T), A)

    def step(carry):
        i, w, t, acc = carry
        ka, kb = jax.random.split(jax.random.fold_in(k1, i))
        wp = jax.random.normal(ka, w.shape)
        tp = _tilt(fn(wp @ T), A)
        accept = jnp.log(jax.random.uniform(kb, t.shape)) < g * (tp - t)
        w = jnp.where(accept[:, None], wp, w)
        t = jnp.where(accept, tp, t)
        return i + 1, w, t, acc + jnp.mean(accept)

    _, w, t, acc = jax.lax.while_loop(lambda c: c[0] < n_steps, step, (jnp.int32(0), w, t, 0.0))
    acceptance = acc / jnp.maximum(n_steps, 1)
    return _complete(F, Q, w, k2), g * jnp.sum(t), W, jnp.asarray(True), acceptance, n_steps


@lru_cache(maxsize=32)
def _chunk_fn(act, gains, bias, kappa, N, P, linear):
    """Compiled: a chunk of networks -> (R, per-chunk max, sum w, sum w C, and on the test rows sum w m,
    sum w s: the networks' predictive mean and second moment of the output f*, T21; per layer the mean
    MH acceptance and the most MH steps; the count of failed networks)."""
    L = len(gains)

    def network(key, F0, conj, Y, zw, mh):
        F, kernels, penalty = F0, [F0 @ F0.T], 0.0
        accs, steps, ok = [], [], jnp.asarray(True)
        keys = jax.random.split(key, L)
        for l in range(L):
            g, A = gains[l], conj[l][:P, :P]
            if linear:
                h, tilt, W, good, acc, n = _layer_linear(keys[l], F, A, g, N)
            else:
                h, tilt, W, good, acc, n = _layer_mh(act.fn, mh, keys[l], F, A, g, N, zw[l])
            # C_emp = F F^T with the explicit factor F = [sqrt(g/N) phi(h)^T, sqrt(g_b) 1]
            F = jnp.concatenate(
                [math.sqrt(g / N) * act.fn(h).T, jnp.full((h.shape[1], 1), math.sqrt(bias[l + 1]))], axis=1
            )
            kernels.append(symmetrize(F @ F.T))
            penalty = penalty + tilt - N * W
            accs.append(acc)
            steps.append(n)
            ok = ok & good
        R = log_evidence(kernels[-1][:P, :P], Y, kappa) - penalty
        R = jnp.where(ok, R, -jnp.inf)
        return R, jnp.stack(kernels), jnp.stack(accs), jnp.stack(steps), ok

    @jax.jit
    def chunk(keys, F0, conj, Y, zw, mh):
        R, K, acc, n, ok = jax.vmap(network, in_axes=(0,) + (None,) * 5)(keys, F0, conj, Y, zw, mh)
        m = jnp.max(R)
        w = jnp.exp(R - m)
        swm = sws = jnp.zeros(0)
        if K.shape[-1] > P:  # test rows (static): the networks' predictive moments
            mean, second = batched_predictive_moments(K[:, -1], Y, kappa)
            swm, sws = w @ mean.reshape(len(w), -1), w @ second.reshape(len(w), -1)
        sums = (jnp.sum(w), jnp.einsum("n,nlab->lab", w, K), swm, sws)
        return R, m, *sums, jnp.mean(acc, axis=0), jnp.max(n, axis=0), jnp.sum(~ok)

    return chunk


class _Chunks(NamedTuple):
    """Per compiled chunk (in batch order): log weights R of every network (concatenated), max R,
    sum w, sum w C and, flattened over the test rows, sum w m and sum w s (T21) with
    w = exp(R - max R), (L,) acceptance and (L,) most MH steps; failed networks in all."""

    R: np.ndarray
    maxes: np.ndarray
    sw: np.ndarray
    swk: np.ndarray
    swm: np.ndarray
    sws: np.ndarray
    acc: list
    steps: list
    bad: int


def _input_factor(spec: NetworkSpec, X_all) -> jnp.ndarray:
    """F0 with C0 = F0 F0^T: [sqrt(g_in/d) X, sqrt(g_b0) 1] (T1)."""
    n_rows, d = X_all.shape
    return jnp.asarray(
        np.hstack([math.sqrt(spec.g_in / d) * X_all, np.full((n_rows, 1), math.sqrt(spec.bias_vars[0]))])
    )


def _accumulate(fn, keys, args, update=lambda done: None) -> _Chunks:
    """Run the compiled chunk `fn` over keys (n_batches, n_chunks, size, 2) with the shared args;
    update(chunks done) after each."""
    R_all, maxes, sw, swk, swm, sws, accs, steps, bad = [], [], [], [], [], [], [], [], 0
    for b in range(keys.shape[0]):
        for c in range(keys.shape[1]):
            update(b * keys.shape[1] + c)
            R, m, s, sk, sm, ss, acc, n, nbad = fn(keys[b, c], *args)
            R_all.append(np.asarray(R))
            maxes.append(float(m))
            sw.append(float(s))
            swk.append(np.asarray(sk))
            swm.append(np.asarray(sm))
            sws.append(np.asarray(ss))
            accs.append(np.asarray(acc))
            steps.append(np.asarray(n))
            bad += int(nbad)
    arrays = (np.asarray(sw), np.asarray(swk), np.asarray(swm), np.asarray(sws))
    return _Chunks(np.concatenate(R_all), np.asarray(maxes), *arrays, accs, steps, bad)


def _batch_sums(chunks: _Chunks, n_batches: int, swx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per jackknife batch, sum w (B,) and sum w x (B, ...) from the per-chunk sums swx, every chunk
    rescaled to the common maximum log weight."""
    scale = np.exp(chunks.maxes - max(chunks.maxes))
    sw_b = (chunks.sw * scale).reshape(n_batches, -1).sum(axis=1)
    swx_b = (swx * scale.reshape((-1,) + (1,) * (swx.ndim - 1))).reshape((n_batches, -1) + swx.shape[1:])
    return sw_b, swx_b.sum(axis=1)


def _predictive_jackknife(chunks: _Chunks, n_batches: int, shape: tuple) -> Predictive | None:
    """The predictive (T21): sum w m / sum w and sum w s / sum w over all networks with their
    delete-one-batch estimates (kind "jackknife"), each (P_test, D); None without test rows."""
    if chunks.swm.shape[1] == 0:
        return None
    sw_b, swm_b = _batch_sums(chunks, n_batches, chunks.swm)
    _, sws_b = _batch_sums(chunks, n_batches, chunks.sws)
    return from_weighted_sums(sw_b, swm_b.reshape((-1,) + shape), sws_b.reshape((-1,) + shape))


def _jackknife(chunks: _Chunks, n_batches: int, C0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kernels, se, loo): the self-normalised ratio sum w C / sum w over all networks, its
    delete-one-batch estimates loo (B, L+1, P', P') and their jackknife SE; layer 0 is C0 (SE 0)."""
    kernels, loo = ratio_jackknife(*_batch_sums(chunks, n_batches, chunks.swk))
    se = standard_error(loo, "jackknife")
    kernels[0], se[0], loo[:, 0] = C0, 0.0, C0
    return kernels, se, loo


def _reweight(at: _AtSaddle, options: Reweighting, key) -> _Plain:
    """The plain pass (T17): options.n_samples networks (rounded down to whole batches) drawn from q
    in compiled chunks of at most options.batch_size, weighted by e^R. With options.rtol, further
    rounds (fresh keys, the same chunk size) until the SE of the CKA adaptation meets it or
    options.max_samples networks are used: all networks are i.i.d. draws from q, so the batches of the
    jackknife stay exchangeable however the rounds fill them."""
    (spec, X_all, Y, P), L = at.problem, at.problem.spec.depth
    linear = spec.act.name == "linear"
    per_batch = options.n_samples // options.n_batches
    size = max(d for d in range(1, min(options.batch_size, per_batch) + 1) if per_batch % d == 0)
    fn = _chunk_fn(spec.act, spec.gains, spec.bias_vars, float(spec.kappa), spec.width, P, linear)
    k_draw, k_w = jax.random.split(as_key(key))
    zw = jnp.zeros((L, 1, P)) if linear else jax.random.normal(k_w, (L, options.n_w, P))
    args = (_input_factor(spec, X_all), jnp.asarray(at.conj[1:]), jnp.asarray(Y), zw, _mh_steps(options))
    C0 = np.asarray(input_kernel(spec, X_all))
    base = cka_layers(nngp_kernels(spec, X_all[:P]), Y)[1:]
    chunks, n_used, met = None, 0, None
    for r in range(_MAX_ROUNDS):
        keys = jax.random.split(jax.random.fold_in(k_draw, r), per_batch * options.n_batches)
        chunk_keys = keys.reshape(options.n_batches, per_batch // size, size, -1)
        with progress.task(
            f"reweighting, round {r + 1}", chunk_keys.shape[0] * chunk_keys.shape[1]
        ) as update:
            new = _accumulate(fn, chunk_keys, args, update)
        chunks = new if chunks is None else _joined(chunks, new)
        n_used += per_batch * options.n_batches
        acceptance = np.mean(chunks.acc, axis=0) if not linear else np.ones(L)
        if chunks.bad or not np.isfinite(chunks.R).all():
            return _Plain(None, None, None, float("nan"), float("nan"), n_used, acceptance, chunks.bad)
        kernels, se, loo = _jackknife(chunks, options.n_batches, C0)
        if options.rtol is None or _kish_ess(chunks.R) < options.min_ess_count:
            break  # no tolerance, or too few effective networks for their SE to mean anything
        se_cka = cka_layers_se(loo, Y, kind="jackknife")[1:]
        target = se_target(cka_layers(kernels, Y)[1:] - base, options.rtol)
        met = bool(np.all(se_cka <= target))
        if met or n_used >= options.max_samples:
            break
        need = n_used * float(np.max((se_cka / np.maximum(target, 1e-300)) ** 2)) * 1.1 - n_used
        step = options.n_batches * size  # whole chunks in every batch
        per_batch = int(np.clip(need, step, options.max_samples - n_used)) // step * size or size
    assert chunks is not None  # at least one round ran
    if met is False:
        warn_user(
            f"reweighted: the CKA adaptation's SE is above rtol = {options.rtol} of the adaptation with "
            f"{n_used} networks (info.rtol_met False; raise max_samples)"
        )
    predictive = _predictive_jackknife(chunks, options.n_batches, (len(X_all) - P, Y.shape[1]))
    ess = _kish_ess(chunks.R)
    weights = (ess, float(np.var(chunks.R)), n_used)
    evidence = _log_mean_exp(chunks.R, ess)
    most = np.max(chunks.steps, axis=0)
    if np.any(most >= options.max_mh) and options.max_mh > options.n_mh:
        warn_user(
            f"reweighted: Metropolis-Hastings chains stopped at max_mh = {options.max_mh} steps before their "
            f"convergence bound (info.mh_steps {most.tolist()}); raise max_mh"
        )
    return _Plain(kernels, se, loo, *weights, acceptance, chunks.bad, met, predictive, evidence, most)


def _mh_steps(options: Reweighting) -> MHSteps:
    return MHSteps(jnp.int32(options.n_mh), jnp.float64(options.mh_tol), jnp.int32(options.max_mh))


def _kish_ess(R: np.ndarray) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2 of the weights w = e^R."""
    w = np.exp(R - R.max())
    return float(w.sum() ** 2 / np.sum(w**2))


def _log_mean_exp(R: np.ndarray, ess: float) -> tuple[float, float]:
    """(ln mean e^R, its delta-method SE): Var(w) / mean(w)^2 = n / ESS - 1 for n weights, so the SE of
    the log of their mean is sqrt((n / ESS - 1) / n)."""
    n = len(R)
    value = float(R.max() + np.log(np.mean(np.exp(R - R.max()))))
    return value, math.sqrt(max(1.0 / ess - 1.0 / n, 0.0))


# The saddle point only sets the proposal q: the weights e^R correct any C~* (T17), so the saddle solved
# here skips the MAP's replicas and its tolerance on their SE (one solve with its first n_samples).
PROPOSAL = Fallback(ImportanceSampling(replicas=0, rtol=None), SecondCumulant(replicas=0, rtol=None))

_MAX_ROUNDS = 6  # of Reweighting.rtol: each round aims at the target with 10 % to spare


def _joined(a: _Chunks, b: _Chunks) -> _Chunks:
    """The chunks of two rounds as one list (every chunk the same size)."""
    return _Chunks(
        np.concatenate([a.R, b.R]),
        np.concatenate([a.maxes, b.maxes]),
        np.concatenate([a.sw, b.sw]),
        np.concatenate([a.swk, b.swk]),
        np.concatenate([a.swm, b.swm]),
        np.concatenate([a.sws, b.sws]),
        a.acc + b.acc,
        a.steps + b.steps,
        a.bad + b.bad,
    )


def _shortfall(plain: _Plain, min_ess: float) -> str:
    """'<ESS> < min_ess_count = <min_ess> of <n> networks (Var R = <var>)'."""
    networks = f"{plain.n_used} networks (Var R = {plain.var_R:.3g})"
    return f"{plain.ess:.3g} < min_ess_count = {min_ess:.3g} of {networks}"


def _plain_estimate(plain: _Plain, options: Reweighting, report: _Report, throw: bool) -> KernelEstimate:
    """The plain reweighting's KernelEstimate: failed networks, a collapsed ESS, or success."""
    info = report.info(plain)
    if plain.kernels is None:
        nan = report.nan_kernels()
        detail = (
            f"{plain.bad} of {plain.n_used} drawn networks had a non-normalisable tilted measure "
            f"(1 - 2g s <= 0) or a non-finite log weight"
        )
        outcome = Outcome(Result.not_positive_definite, detail, method=options)
        return finish("reweighted", nan, nan, info, outcome, throw=throw)
    outcome = Outcome(method=options)
    if plain.ess < options.min_ess_count:
        advice = _ess_advice(plain.ess, plain.n_used, options.min_ess_count, plain.var_R)
        detail = "effective sample size " + _shortfall(plain, options.min_ess_count)
        outcome = Outcome(Result.ess_collapsed, detail, advice, method=options)
    assert plain.loo is not None  # the kernels are (checked above), so are their jackknife estimates
    estimates = Estimates("jackknife", plain.loo)
    return finish(
        "reweighted",
        plain.kernels,
        plain.se,
        info,
        outcome,
        estimates=estimates,
        predictive=plain.predictive,
        throw=throw,
    )


def _smc_problems(runs: list[SMCRun]) -> list[str]:
    """Runs that stopped early (and why), did not reach beta = 1, or whose final HMC acceptance fell
    below 0.1."""
    problems = [f"run {i}: {r.problem}" for i, r in enumerate(runs) if r.problem]
    problems += [
        f"run {i}: stopped at beta = {r.temperatures[-1]:.3g} after {len(r.temperatures) - 1} temperatures"
        for i, r in enumerate(runs)
        if not r.reached and not r.problem
    ]
    problems += [
        f"run {i}: final HMC acceptance {r.acceptance[-1]:.2f} < 0.1"
        for i, r in enumerate(runs)
        if len(r.acceptance) and r.acceptance[-1] < 0.1
    ]
    return problems


def _tempered(at: _AtSaddle, key, smc: TemperedSMC, report: _Report, plain, throw, fallback=None):
    """Tempered SMC from q to the posterior (smc.py): the mean of smc.n_runs independent runs, with
    the leave-one-run-out means as jackknife set. Fails (diagnostics_failed) when a run did not reach
    beta = 1 within smc.max_temperatures or its final HMC acceptance fell below 0.1. plain: the plain
    reweighting that ran first (None if none), fallback: (its options, why it was abandoned)."""
    spec, X_all, Y, _ = at.problem
    per_run, m, s, runs = run_smc(spec, X_all, Y, at.conj, jax.random.fold_in(as_key(key), 1), smc)
    B = len(per_run)
    C0 = np.broadcast_to(np.asarray(input_kernel(spec, X_all)), (B, 1) + per_run.shape[-2:])
    per_run = np.concatenate([C0, per_run], axis=1)
    kernels, loo = _run_means(per_run)
    predictive = None
    if m.shape[1]:  # test rows: the mean over runs of each run's predictive moments (T21)
        (mean, means), (second, seconds) = _run_means(m), _run_means(s)
        predictive = from_moments(mean, second, "jackknife", means, seconds)
    problems = _smc_problems(runs)
    advice = None
    if problems:
        advice = "more temperatures (max_temperatures), more MCMC moves (n_mcmc) or a smaller step_size"
    if not all(r.finite for r in runs):
        advice = (
            "the tempered path has no finite weights: remove duplicate inputs, add biases (g_b > 0), or "
            "raise the width or kappa (a weaker tilt)"
        )
    outcome = Outcome(
        Result.diagnostics_failed if problems else Result.success,
        "tempered SMC: " + "; ".join(problems) if problems else "",
        advice,
        method=smc,
        fallback=fallback,
    )
    info = report.info(plain, tuple(runs))
    estimates = Estimates("jackknife", loo)
    se = standard_error(loo, "jackknife")
    return finish(
        "reweighted", kernels, se, info, outcome, estimates=estimates, predictive=predictive, throw=throw
    )


def _run_means(per_run: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean over independent runs (B, ...) and its leave-one-run-out means (kind "jackknife"):
    the ratio jackknife with equal weights."""
    return ratio_jackknife(np.ones(len(per_run)), per_run)


def _proposal_saddle(spec: NetworkSpec, X, Y, key) -> KernelEstimate:
    """The saddle point behind q when none is passed: on the training rows only (C~* vanishes on test
    rows, T17), for nonlinear phi one solve with `PROPOSAL` (q need not be precise)."""
    return solve_map(spec, X, Y, tilted=None if spec.act.is_linear else PROPOSAL, key=key, throw=False)


def _conj_kernels(saddle, depth: int, n_rows: int, P: int) -> np.ndarray:
    """The saddle point's conjugate kernels C~*(0..L) (T8) on all n_rows rows, checked to be a solve_map
    estimate's; one solved on the P training rows alone is padded with zeros (C~* vanishes on test
    rows, and they do not change it on the training rows)."""
    if not (
        isinstance(saddle, KernelEstimate) and saddle.estimator == "map" and isinstance(saddle.info, MAPInfo)
    ):
        got = f"a {saddle.estimator!r} estimate" if isinstance(saddle, KernelEstimate) else repr(saddle)
        raise InputError(f"saddle: expected a solve_map estimate (KernelEstimate 'map'), got {got}")
    conj = np.asarray(saddle.info.conj_kernels)
    if conj.shape == (depth + 1, P, P):
        conj = np.pad(conj, ((0, 0), (0, n_rows - P), (0, n_rows - P)))
    if conj.shape != (depth + 1, n_rows, n_rows):
        raise InputError(
            f"saddle: expected info.conj_kernels of shape {(depth + 1, n_rows, n_rows)} (the same X and "
            f"X_test) or {(depth + 1, P, P)} (the same X), got {conj.shape}"
        )
    return conj


@limit_blas_threads
def reweighted_kernels(
    spec: NetworkSpec,
    X,
    Y,
    X_test=None,
    *,
    options: Reweighting = Reweighting(),
    saddle: KernelEstimate | None = None,
    key=0,
    throw: bool = True,
) -> KernelEstimate:
    """Posterior mean kernels by saddle-point importance sampling (T17), or tempered SMC (THEORY 8).

    Args:
      spec: network (one output); X: (P, d); Y: (P,) or (P, 1); X_test: optional (P_test, d).
      options: Reweighting(n_samples, n_batches, min_ess_count, n_mh, n_w, batch_size, tempering);
        tempering TemperedSMC(...) moves to the posterior by tempered SMC when the ESS is below min_ess_count
        (always=True: without trying plain reweighting), None never.
      saddle: a `solve_map` estimate on the same X, Y, with or without X_test (else `_proposal_saddle`);
      key: int or PRNGKey; throw: raise on failure (default).

    Returns:
      KernelEstimate "reweighted": kernels (L+1, P', P') on train + test rows (layer 0 the input kernel),
      se the delete-one-batch (or -run) jackknife standard errors (zero in layer 0), estimates the
      leave-one-out set, method the Reweighting or its TemperedSMC options (fallback: (Reweighting,
      why it was abandoned)), info ReweightedInfo. If the saddle point did not converge the kernels
      are NaN and the result the MAP's failure.

    Example:
      >>> import critical_kernels as ck
      >>> data = ck.datasets.xor(n_train=10, n_test=0)
      >>> spec = ck.NetworkSpec(depth=2, width=100, activation="linear", g_b=0.1)
      >>> options = ck.Reweighting(n_samples=256, rtol=None, tempering=None)
      >>> est = reweighted_kernels(spec, data.X, data.Y, options=options)
      >>> est.ok, est.kernels.shape == est.se.shape == (3, 10, 10), est.method.label
      (True, True, 'importance')
    """
    start = time.perf_counter()
    problem = prepare(spec, X, Y, X_test, options=(options, Reweighting))
    X_all = problem.X_all
    saddle = _proposal_saddle(spec, X, Y, key) if saddle is None else saddle
    at = _AtSaddle(problem, _conj_kernels(saddle, spec.depth, len(X_all), problem.P))
    report = _Report(start, options.n_batches, spec.depth, len(X_all), bool(saddle.ok))
    smc = options.tempering
    always = smc is not None and smc.always
    if not saddle.ok:
        nan = report.nan_kernels()
        detail = (
            f"the saddle point (MAP) did not converge, so there is nothing to reweight ({saddle.message})"
        )
        outcome = Outcome(saddle.result, detail, method=smc if always else options)
        return finish("reweighted", nan, nan, report.info(), outcome, throw=throw)
    if smc is not None and smc.always:
        return _tempered(at, key, smc, report, None, throw)
    plain = _reweight(at, options, key)
    if smc is not None and plain.kernels is not None and plain.ess < options.min_ess_count:
        fallback = (options, "ESS " + _shortfall(plain, options.min_ess_count))
        return _tempered(at, key, smc, report, plain, throw, fallback)
    return _plain_estimate(plain, options, report, throw)
