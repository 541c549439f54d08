"""Tempered sequential Monte Carlo from the saddle point's measure q to the posterior (THEORY section 8).

In the pre-activation parameterisation (T19, `Preactivation`) the parameters are u ~ N(0, I), one block
V_l (k_l x N) of neuron coordinates per hidden layer with pre-activations h(l) = M_l V_l (M_l =
chol(C_emp(l-1)), or [phi(h(l-1)) sigma_w, sigma_b 1] where the layer keeps its weights). Neuron i of
layer l drawn from the tilted measure of T17 is then N(0, I) in V_l[:, i] times exp(g_l t(h_(l,i)))
/ exp(W~_l), so q and the posterior are explicit densities of u:

  ln q(u)        = -|u|^2/2 + T(u) + const,
  T(u)           = sum_l [ g_l sum_i phi(h_(l,i))_tr^T C~*(l) phi(h_(l,i))_tr - N W~_l(C~*(l) | C_emp(l-1)) ],
  ln p(u | Y)    = -|u|^2/2 + R(u) + T(u) + const,   R = ln N(Y; 0, C_emp(L)_tr + kappa I) - T   (T17, T19).

SMC moves n particles through pi_beta ∝ q e^(beta R), beta: 0 -> 1 (BlackJAX's adaptive tempered SMC:
each next beta keeps the ESS of the incremental weights e^((beta' - beta) R) at target_ess * n;
multinomial resampling; HMC rejuvenation targeting pi_beta, identity mass in u, its step size adapted
between temperatures to the acceptance rate).

W~_l for l >= 2 is computed with M common random numbers as in reweighted.py (closed form for linear
phi). It enters only pi_beta with beta < 1: pi_1 is the posterior whatever W~ is, so its O(1/M) error
shapes the path, not the answer. W~_1 is a constant (C0 is fixed) and dropped.

Initial particles: each neuron by independence Metropolis-Hastings with proposal N(0, I) on the
coordinates its training rows see (acceptance exp(g (t' - t))), the others from N(0, I); the first
step's rejuvenation runs at beta = 0, i.e. targets q itself.

Estimate: at beta = 1 the particles are resampled by their weights and moved `n_final` more times by HMC
on the posterior; a run's estimate is the mean kernel over particles and those moves, and on test rows
the mean of each particle's predictive mean m and second moment m^2 + v of the output f* (T21).

Standard errors: `n_runs` independent runs; the estimate is their mean and the leave-one-run-out means
are the jackknife set (the SE of the mean for a linear function of the kernels). A run's estimate
carries an O(1/n) bias, so more runs do not remove it; more particles do.
"""

from __future__ import annotations

import math
from functools import lru_cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.mcmc import hmc
from blackjax.smc import adaptive_tempered, resampling

from .. import linalg, progress
from ..likelihood import batched_predictive_moments, log_evidence
from ..spec import NetworkSpec
from .network import empirical_kernel
from .options import TemperedSMC
from .preactivation import Preactivation, input_rank


class SMCRun(NamedTuple):
    """One tempered SMC run: its temperature ladder beta_0 = 0 < ... < 1, the mean HMC acceptance and
    step size at each step, its Kish ESS at the last temperature, whether it reached beta = 1, the
    mean acceptance of the final moves on the posterior, and why it stopped early ("" if it did not)."""

    temperatures: np.ndarray
    acceptance: np.ndarray
    step_size: np.ndarray
    final_ess: float
    reached: bool
    final_acceptance: float
    n_particles: int
    problem: str = ""
    finite: bool = True  # False: non-finite log weights stopped the run


def _tilt_terms(model: Preactivation, conj, zw, u, X, P):
    """(T(u), C_emp(0..L)), T as in the module docstring; conj (L, P, P): training blocks of C~*(1..L)."""
    s = model.spec
    C, h = model.forward(u, X)
    total = 0.0
    for l in range(1, s.depth + 1):
        g, A = s.gains[l - 1], conj[l - 1]
        phi = s.act.fn(h[l - 1][:P])
        total = total + g * jnp.sum(phi * (A @ phi))
        if l >= 2:
            # C_emp(l-1)_tr = F F^T. Where the model takes pre-activations (C positive definite), F is the
            # training block of the very factorisation the model uses. Elsewhere the explicit factor
            # [sqrt(g/N) phi(h), sqrt(g_b) 1] (C may be singular).
            if model.preactivation_layers[l - 1]:
                F = linalg.cholesky(C[l - 1])[:P, :P]
            else:
                phi_below = math.sqrt(s.gains[l - 2] / s.width) * s.act.fn(h[l - 2][:P])
                F = jnp.concatenate([phi_below, jnp.full((P, 1), math.sqrt(s.bias_vars[l - 1]))], axis=1)
            if s.act.name == "linear":  # W~ = -(1/2) ln det(I - 2g F^T A F)  (Sylvester: = det(I - 2g C A))
                # positive definite where the tilt is normalisable (T20), else NaN: no finite weight
                W = -0.5 * linalg.logdet_pd(jnp.eye(F.shape[1]) - 2.0 * g * F.T @ A @ F)
            else:  # ln mean_m exp(g t(F z_m)) with common random numbers z_m
                phi_w = s.act.fn(zw[l - 1][:, : F.shape[1]] @ F.T)
                W = jax.scipy.special.logsumexp(g * jnp.sum(phi_w * (phi_w @ A), axis=1)) - math.log(
                    len(zw[0])
                )
            total = total - s.width * W
    return total, C


def _initial_particles(model: Preactivation, conj, X, P, key, n_mh):
    """One draw of u from q: each neuron by independence MH (proposal N(0, I)) on the coordinates that its
    training rows see, layer by layer (T17)."""
    s = model.spec
    C, h, blocks = [model.input_kernel(X)], [], []
    keys = jax.random.split(key, s.depth)
    for l in range(1, s.depth + 1):
        pre = model.preactivation_layers[l - 1]
        M = model.layer_map(l, C[-1], h[-1] if h else None, X)
        k = M.shape[1]
        seen = P if pre else k  # lower Cholesky: training rows of h see only the first P rows of z
        M_tr, g, A = M[:P, :seen], s.gains[l - 1], conj[l - 1]

        def tilt(V, M_tr=M_tr, A=A):
            phi = s.act.fn(M_tr @ V)
            return jnp.sum(phi * (A @ phi), axis=0)

        k0, k1, k2 = jax.random.split(keys[l - 1], 3)
        V = jax.random.normal(k0, (seen, s.width))
        t = tilt(V)

        def step(carry, kk, g=g, tilt=tilt):
            V, t = carry
            ka, kb = jax.random.split(kk)
            Vp = jax.random.normal(ka, V.shape)
            tp = tilt(Vp)
            accept = jnp.log(jax.random.uniform(kb, t.shape)) < g * (tp - t)
            return (jnp.where(accept[None], Vp, V), jnp.where(accept, tp, t)), None

        (V, _), _ = jax.lax.scan(step, (V, t), jax.random.split(k1, n_mh))
        if seen < k:
            V = jnp.concatenate([V, jax.random.normal(k2, (k - seen, s.width))])
        blocks.append(V)
        h.append(M @ V)
        C.append(empirical_kernel(s, l, h[-1]))
    return model.pack(blocks)


def _log_ratio(model: Preactivation, P: int, X, Y, conj, zw, u):
    """R(u) = ln N(Y; 0, C_emp(L) + kappa I) - T(u) (module docstring)."""
    T, C = _tilt_terms(model, conj, zw, u, X, P)
    return log_evidence(C[-1][:P, :P], Y, model.spec.kappa) - T


def _densities(model: Preactivation, P: int, X, Y, conj, zw):
    """(ln q, R) as functions of u (module docstring): the prior and the likelihood of the tempered path."""

    def loglik(u):  # a non-finite R (checked before the first step) as zero weight
        R = _log_ratio(model, P, X, Y, conj, zw, u)
        return jnp.where(jnp.isfinite(R), R, -jnp.inf)

    def logprior(u):  # ln q = -|u|^2/2 + T
        T, _ = _tilt_terms(model, conj, zw, u, X, P)
        return -0.5 * jnp.sum(u * u) + T

    return logprior, loglik


def _hmc_move(n_leapfrog: int):
    """One HMC move (identity mass in u) of n_leapfrog steps: (key, state, logdensity, step_size)."""

    def mcmc_step(key, state, logdensity, step_size):
        return hmc.build_kernel()(
            key, state, logdensity, step_size, jnp.ones_like(state.position), n_leapfrog
        )

    return mcmc_step


def _final_program(model: Preactivation, mcmc_step, options: TemperedSMC):
    """Compiled: resample by the final weights, then n_final HMC moves on the posterior itself (pi_1
    needs no W~: ln p = -|u|^2/2 + ln N(Y; 0, C_emp(L) + kappa I)); the means over particles and moves
    of the kernels and, on the test rows, of the predictive moments m, m^2 + v (T21; (0, D) without
    test rows), and the mean acceptance."""

    @jax.jit
    def final(key, state, step_size, X, Y):
        k_resample, k_moves = jax.random.split(key)
        n = state.weights.shape[0]
        positions = state.particles[resampling.systematic(k_resample, state.weights, n)]
        logdensity = partial(model.log_density, X=X, Y=Y)
        states = jax.vmap(lambda u: hmc.init(u, logdensity))(positions)

        def move(states, k):
            states, info = jax.vmap(lambda kk, st: mcmc_step(kk, st, logdensity, step_size))(
                jax.random.split(k, n), states
            )
            K = jax.lax.map(
                lambda u: model.kernels(u, X), states.position, batch_size=options.batch_size or None
            )
            m = s = jnp.zeros((n, 0, Y.shape[1]))
            if K.shape[-1] > Y.shape[0]:  # test rows (static)
                m, s = batched_predictive_moments(K[:, -1], Y, model.spec.kappa)
            means = tuple(jnp.mean(x, axis=0) for x in (K, m, s))
            return states, (*means, jnp.mean(info.acceptance_rate))

        _, (K, m, s, acc) = jax.lax.scan(move, states, jax.random.split(k_moves, options.n_final))
        return jnp.mean(K, axis=0), jnp.mean(m, axis=0), jnp.mean(s, axis=0), jnp.mean(acc)

    return final


@lru_cache(maxsize=16)
def _programs(model: Preactivation, P: int, options: TemperedSMC):
    """Compiled (initial draws, one adaptive tempered SMC step, weighted kernels) for one shape."""
    mcmc_step = _hmc_move(options.n_leapfrog)

    @jax.jit
    def init(keys, X, conj):
        return jax.vmap(lambda k: _initial_particles(model, conj, X, P, k, options.n_mh))(keys)

    @jax.jit
    def step(key, state, step_size, X, Y, conj, zw):
        logprior, loglik = _densities(model, P, X, Y, conj, zw)
        kernel = adaptive_tempered.build_kernel(
            logprior,
            loglik,
            mcmc_step,
            hmc.init,
            resampling.systematic,
            options.target_ess,
            batch_size=options.batch_size,
        )
        state, info = kernel(key, state, options.n_mcmc, {"step_size": step_size[None]})
        return state, jnp.mean(info.update_info.acceptance_rate)

    @jax.jit
    def ratios(particles, X, Y, conj, zw):  # R of every particle, non-finite values as they are
        return jax.vmap(lambda u: _log_ratio(model, P, X, Y, conj, zw, u))(particles)

    return init, step, _final_program(model, mcmc_step, options), ratios


def _ladder(programs, state, data: tuple, key, options: TemperedSMC, update=lambda beta, text="": None):
    """Adaptive tempering steps until beta = 1: (state, betas, acceptances, step sizes, step size, problem,
    the key left over).
    Stops with a problem (never a silent jump to beta = 1) where the weights become non-finite or no
    admissible next temperature exists."""
    _, step, _, _ = programs
    eps, betas, accs, steps, problem = options.step_size, [0.0], [], [], ""
    while betas[-1] < 1.0 and len(betas) <= options.max_temperatures:
        key, k = jax.random.split(key)
        state, acc = step(k, state, jnp.asarray(eps), *data)
        betas.append(float(state.tempering_param))
        update(betas[-1], f"beta = {betas[-1]:.3g}")
        accs.append(float(acc))
        steps.append(eps)
        # HMC step size towards acceptance ~0.65 for the next temperature (a factor of 2 at most)
        eps *= float(np.clip(np.exp(2.0 * (accs[-1] - 0.65)), 0.5, 2.0))
        if not np.all(np.isfinite(np.asarray(state.weights))):
            problem = f"non-finite particle weights at beta = {betas[-1]:.3g}"
            break
        if not np.isfinite(betas[-1]) or betas[-1] <= betas[-2]:
            problem = f"no admissible temperature after beta = {betas[-2]:.3g}"  # stuck
            break
    return state, betas, accs, steps, eps, problem, key


def _one_run(programs, data: tuple, keys: tuple, options: TemperedSMC, nan_kernels):
    """One tempered SMC run from keys (initial draws, steps): (kernels (L, P', P'), predictive moments
    (m, s) each (P_test, D), SMCRun). A run whose
    initial particles already have non-finite log weights R stops before its first step, saying so
    (blackjax would read NaN weights as equal ones and jump to beta = 1)."""
    init, _, final, ratios = programs
    Xj, Yj, conj_tr, zw = data
    k_init, k_steps = keys
    state = adaptive_tempered.init(init(jax.random.split(k_init, options.n_particles), Xj, conj_tr))
    state = state._replace(tempering_param=jnp.asarray(0.0))  # one trace for every step
    R = np.asarray(ratios(state.particles, *data))
    bad = int(np.sum(~np.isfinite(R)))
    if bad:
        problem = (
            f"{bad} of {len(R)} initial particles have a non-finite log weight R (a singular empirical "
            "kernel, or a tilt that overflows)"
        )
        run = SMCRun(np.zeros(1), np.zeros(0), np.zeros(0), math.nan, False, math.nan, len(R), problem, False)
        unknown = np.full((Xj.shape[0] - Yj.shape[0], Yj.shape[1]), np.nan)
        return nan_kernels, (unknown, unknown), run
    with progress.task("tempered SMC", 1.0) as update:
        state, betas, accs, steps, eps, problem, k_steps = _ladder(
            programs, state, data, k_steps, options, update
        )
    weights = np.asarray(state.weights)
    _, k_final = jax.random.split(k_steps)
    K, m, s, acc = final(k_final, state, jnp.asarray(eps), Xj, Yj)
    ess = float(1.0 / np.sum(weights**2))
    reached = betas[-1] >= 1.0 and not problem
    finite = bool(np.all(np.isfinite(weights)))
    run = SMCRun(
        np.asarray(betas),
        np.asarray(accs),
        np.asarray(steps),
        ess,
        reached,
        float(acc),
        len(R),
        problem,
        finite,
    )
    return np.asarray(K), (np.asarray(m), np.asarray(s)), run


def run_smc(spec: NetworkSpec, X_all, Y, conj, key, options: TemperedSMC):
    """`options.n_runs` independent tempered SMC runs from q (saddle point conj = C~*(0..L) on all rows)
    to the posterior. Returns (kernels (n_runs, L, P', P') per run on all rows, the predictive moments
    m, m^2 + v of f* per run (n_runs, P_test, D) each (T21), [SMCRun])."""
    P, (n_rows, d) = Y.shape[0], X_all.shape
    programs = _programs(Preactivation(spec, d, n_rows, input_rank(spec, X_all)), P, options)
    Xj, Yj = jnp.asarray(X_all), jnp.asarray(Y)
    conj_tr = jnp.asarray(np.asarray(conj)[1:, :P, :P])
    width = max(P, spec.width + 1)  # the columns of either factor of C_emp
    nan_kernels = np.full((spec.depth, n_rows, n_rows), np.nan)
    out, moments, runs = [], [], []
    for k_run in jax.random.split(key, options.n_runs):
        k_init, k_steps, k_w = jax.random.split(k_run, 3)
        # each run its own common random numbers for W~: their effect on the path is then in the run spread
        zw = jax.random.normal(k_w, (spec.depth, 1 if spec.act.name == "linear" else options.n_w, width))
        K, ms, run = _one_run(programs, (Xj, Yj, conj_tr, zw), (k_init, k_steps), options, nan_kernels)
        out.append(K)
        moments.append(ms)
        runs.append(run)
    m, s = (np.stack(x) for x in zip(*moments, strict=True))
    return np.stack(out), m, s, runs
