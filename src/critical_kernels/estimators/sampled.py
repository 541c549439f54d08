"""Posterior sampling of finite networks with BlackJAX: MALA, HMC, NUTS, unadjusted Langevin.

Chains run under vmap, every loop is a lax.scan, and the step size of each chain is tuned by
dual averaging during warm-up. Sampling runs in chunks so a progress bar can advance between
compiled calls; each chunk's per-chain kernel means are the batch means behind the Monte Carlo
standard errors of kernel entries (THEORY section 7). The compiled programs are built once per
(spec, sampler with its space and prior, schedule, shapes) and reused: a second call with the same
shapes compiles nothing.
Two parameterisations of the same posterior: whitened weights (Network, THEORY 7) or pre-activations
with the weights and readout integrated out (Preactivation, T19).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache, partial
from pathlib import Path
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.step_size import dual_averaging_adaptation

from .. import progress
from ..errors import NotPositiveDefiniteError
from ..nngp import input_kernel
from ..numerics import as_key, limit_blas_threads, standard_error
from ..predictive import Predictive, from_moments
from ..spec import NetworkSpec
from .base import Estimates, KernelEstimate, Outcome, Result, finish, prepare
from .checkpoint import Progress, check_path, fingerprint, load_progress, save_progress
from .diagnostics import chain_diagnostics
from .network import Network
from .options import HMC, MALA, NUTS, Chains, Langevin, _Sampler
from .options import SPACES as SPACES  # re-exported: other code imports it from here
from .preactivation import Preactivation, input_rank


class SamplingInfo(NamedTuple):
    """sampler: its options (space and prior included); acceptance, step_size: (chains,); rhat_cka,
    ess_cka: (L+1,) R-hat and ESS of the per-draw CKA (layer 0: 1 and inf); rhat_kernels, ess_kernels:
    (L+1,) worst R-hat and smallest ESS over kernel entries from the batch means (reported, not used to
    flag: with ~10 batches per chain R-hat is noisy); grad_evals; warnings: what failed; timings;
    cka_draws: (chains, draws, L) the CKA of layers 1..L per recorded draw (R-hat and ESS of the CKA;
    pooling runs). The batch means behind the SE are the
    estimate's `estimates` (kind "batches", chain-major)."""

    sampler: _Sampler
    acceptance: np.ndarray
    step_size: np.ndarray
    rhat_cka: np.ndarray
    ess_cka: np.ndarray
    rhat_kernels: np.ndarray
    ess_kernels: np.ndarray
    grad_evals: int
    warnings: tuple
    timings: dict
    cka_draws: np.ndarray


def _model(spec: NetworkSpec, space: str, d: int, n_rows: int, rank: int | None):
    """The parameterisation: Network (whitened weights) or Preactivation on n_rows = P' inputs whose
    input kernel has rank `rank` (T19)."""
    if space == "weights":
        return Network(spec, d)
    assert rank is not None, "pre-activation space needs the input kernel's rank"
    return Preactivation(spec, d, n_rows, rank)


def _kernel_fns(sampler):
    """(init(position, logdensity), step(key, state, logdensity, step_size) -> (state, acceptance, evals))."""
    if isinstance(sampler, MALA):
        kernel = blackjax.mala.build_kernel()

        def mala_step(key, state, logdensity, eps):
            state, info = kernel(key, state, logdensity, eps)
            return state, info.acceptance_rate, 1

        return blackjax.mala.init, mala_step
    if isinstance(sampler, (HMC, NUTS)):
        n_leapfrog = sampler.n_leapfrog if isinstance(sampler, HMC) else None
        kernel = blackjax.hmc.build_kernel() if n_leapfrog else blackjax.nuts.build_kernel()
        extra = (n_leapfrog,) if n_leapfrog else ()

        def step(key, state, logdensity, eps):
            mass = jnp.ones_like(state.position)  # identity: u is whitened (preconditioned per layer)
            state, info = kernel(key, state, logdensity, eps, mass, *extra)
            return state, info.acceptance_rate, n_leapfrog or info.num_integration_steps

        return blackjax.hmc.init, step

    def langevin(key, state, logdensity, eps):  # unadjusted: Euler-Maruyama, no accept step
        position, _, grad = state
        position = position + eps * grad + jnp.sqrt(2 * eps) * jax.random.normal(key, position.shape)
        logp, grad = jax.value_and_grad(logdensity)(position)
        return blackjax.mcmc.mala.MALAState(position, logp, grad), jnp.ones(()), 1

    return blackjax.mala.init, langevin


def _cka(K, Y):
    """CKA (T16) in JAX for the per-draw diagnostics; K (P, P), Y (P, D)."""

    def centre(A):
        A = A - A.mean(axis=0, keepdims=True)
        return A - A.mean(axis=1, keepdims=True)

    Kc, Tc = centre(K), centre(Y @ Y.T)
    return jnp.sum(Kc * Tc) / jnp.sqrt(jnp.sum(Kc * Kc) * jnp.sum(Tc * Tc))


class _Programs(NamedTuple):
    init: Callable
    warm: Callable
    batch: Callable


class _Schedule(NamedTuple):
    """What the compiled programs depend on besides spec, sampler and shapes: warm-up steps, steps
    per recorded draw (thin) and recorded draws per batch."""

    warmup: int
    thin: int
    draws: int


def _warm_program(sampler, step, log_density, warmup: int):
    """Compiled warm-up: `warmup` steps per chain with dual-averaging step-size adaptation."""
    da_init, da_update, da_final = dual_averaging_adaptation(getattr(sampler, "target_accept", 0.6))

    @jax.jit
    def warm(X, Y, states, keys):
        logdensity = log_density(X, Y)

        def one(state, key):
            def body(carry, k):
                state, da = carry
                state, acc, _ = step(k, state, logdensity, jnp.exp(da.log_step_size))
                return (state, da_update(da, jnp.nan_to_num(acc))), None

            carry = (state, da_init(sampler.step_size))
            (state, da), _ = jax.lax.scan(body, carry, jax.random.split(key, warmup))
            return state, da_final(da)

        return jax.vmap(one)(states, keys)

    return warm


def _batch_program(spec: NetworkSpec, space: str, step, log_density, shape: tuple, schedule: _Schedule):
    """Compiled batch: per chain `draws` recorded draws `thin` steps apart; the sums of C, C^2, the
    predictive mean m and second moment m^2 + v of the output f* on the test rows over them, and per draw the
    CKA of every layer, the acceptance and the gradient evaluations."""
    thin, draws = schedule.thin, schedule.draws
    d, P, rank = shape

    @jax.jit
    def batch(X, Y, states, eps, keys):
        logdensity = log_density(X, Y)
        net = _model(spec, space, d, X.shape[0], rank)

        def one(state, eps, key):
            def record(carry, k):
                state, sums = carry

                def move(c, kk):
                    state, acc, evals = c
                    state, a, e = step(kk, state, logdensity, eps)
                    return (state, acc + a, evals + e), None

                (state, acc, evals), _ = jax.lax.scan(move, (state, 0.0, 0), jax.random.split(k, thin))
                C = net.kernels(state.position, X)
                f, v = net.test_predictive(state.position, X, Y)
                sums = (sums[0] + C, sums[1] + C * C, sums[2] + f, sums[3] + f * f + v)
                ckas = jax.vmap(lambda K: _cka(K[:P, :P], Y))(C)
                return (state, sums), (ckas, acc / thin, evals)

            L, Pa = spec.depth, X.shape[0]
            test = jnp.zeros((Pa - P, spec.n_out))
            zeros = (jnp.zeros((L, Pa, Pa)), jnp.zeros((L, Pa, Pa)), test, test)
            (state, sums), per_draw = jax.lax.scan(record, (state, zeros), jax.random.split(key, draws))
            return state, sums, per_draw

        return jax.vmap(one)(states, eps, keys)

    return batch


@lru_cache(maxsize=16)
def _programs(spec: NetworkSpec, sampler, shape: tuple, schedule: _Schedule) -> _Programs:
    """Compiled init / warm-up / batch programs, built once per configuration (the sampler carries the
    space and prior; shape: (d, P, rank of C0); the model is built when tracing, from the rows P' of X)."""
    init_fn, step = _kernel_fns(sampler)
    d, _, rank = shape

    def log_density(X, Y):
        net = _model(spec, sampler.space, d, X.shape[0], rank)
        return partial(net.log_density, X=X, Y=Y, prior=sampler.prior)

    @jax.jit
    def init(X, Y, positions):
        return jax.vmap(lambda u: init_fn(u, log_density(X, Y)))(positions)

    warm = _warm_program(sampler, step, log_density, schedule.warmup)
    batch = _batch_program(spec, sampler.space, step, log_density, shape, schedule)
    return _Programs(init, warm, batch)


class _Job(NamedTuple):
    """One sample_posterior call: its compiled programs and options, all rows X_all (NumPy, training
    rows first), P training rows, the data on the device (Xj, Yj) and the input kernel's rank."""

    programs: _Programs
    spec: NetworkSpec
    sampler: _Sampler
    chains: Chains
    X_all: np.ndarray
    P: int
    Xj: jax.Array
    Yj: jax.Array
    rank: int | None  # rank of the input kernel (pre-activation space), else None


def _dim(job: _Job) -> int:
    """The number of sampled coordinates per chain."""
    return _model(job.spec, job.sampler.space, job.X_all.shape[1], job.X_all.shape[0], job.rank).dim


def _warm_up(job: _Job, k_init, k_warm) -> Progress:
    """Initial prior draws, then the warm-up (none for Langevin): states and step sizes (chains,)."""
    chains, sampler = job.chains, job.sampler
    start = time.perf_counter()
    states = job.programs.init(job.Xj, job.Yj, jax.random.normal(k_init, (chains.chains, _dim(job))))
    if not np.all(np.isfinite(np.asarray(states.logdensity))):
        raise NotPositiveDefiniteError(
            f"the log density of the initial {sampler.space} draws is not finite: an empirical kernel is "
            "singular (duplicate inputs, or x and -x with an odd activation and no biases); remove "
            "duplicates, add biases (g_b > 0), or sample weights: sampler=...(space='weights')"
        )
    if isinstance(sampler, Langevin) or chains.warmup == 0:
        eps = jnp.full(chains.chains, sampler.step_size)  # pyright: ignore[reportAttributeAccessIssue]
    else:
        states, eps = job.programs.warm(job.Xj, job.Yj, states, jax.random.split(k_warm, chains.chains))
    jax.block_until_ready((states, eps))  # dispatch is asynchronous: time the warm-up itself
    return Progress(states, np.asarray(eps), [], [], {"warmup": time.perf_counter() - start})


def _sample_batches(job: _Job, done: Progress, k_draw, save: Callable[[Progress], None]) -> Progress:
    """The batches not yet in `done` of chains.n_batches compiled batches (a progress bar between them
    if chains.progress): per batch the per-chain sums and the per-draw records (NumPy); `save` gets
    the progress after each batch."""
    chains = job.chains
    states, sums, per_draw, timings = done.states, list(done.sums), list(done.per_draw), dict(done.timings)
    timings["batches"] = list(timings.get("batches", []))  # the first includes compilation on a first call
    keys = jax.random.split(k_draw, chains.n_batches)  # fixed by the key: a resumed run draws the same
    eps = jnp.asarray(done.eps)
    description = f"{type(job.sampler).__name__}: {chains.chains} chains"
    with progress.task(description, chains.n_batches, show=chains.progress) as update:
        warmup = 0 if isinstance(job.sampler, Langevin) else chains.warmup
        first = "warmed up" if not sums else f"resumed after batch {len(sums)}"
        update(len(sums), f"{first}{_time_left(timings, chains, len(sums), warmup)}")
        for b in range(len(sums), chains.n_batches):
            tick = time.perf_counter()
            states, batch_sums, batch_draws = job.programs.batch(
                job.Xj, job.Yj, states, eps, jax.random.split(keys[b], chains.chains)
            )
            sums.append(jax.tree.map(np.asarray, batch_sums))
            per_draw.append(jax.tree.map(np.asarray, batch_draws))
            timings["batches"].append(time.perf_counter() - tick)
            timings["sampling"] = sum(timings["batches"])
            done = done._replace(states=states, sums=sums, per_draw=per_draw, timings=timings)
            save(done)
            left = _time_left(timings, chains, b + 1, warmup)
            update(b + 1, f"batch {b + 1} of {chains.n_batches}{left}")
    return done


def _time_left(timings: dict, chains: Chains, done: int, warmup: int) -> str:
    """', about ... left' at the pace so far: the median finished batch after the first (which
    compiles), before any the time per step of the `warmup` steps (compilation included; a batch
    also computes kernels every `thin` steps: a rough guide)."""
    paced = timings["batches"][1:] or timings["batches"]
    if paced:
        per_batch = float(np.median(paced))
    elif warmup:
        per_batch = timings["warmup"] / warmup * chains.n_samples / chains.n_batches
    else:
        return ""
    seconds = per_batch * (chains.n_batches - done)
    if seconds <= 0:
        return ""
    if seconds < 60:
        return ", under a minute left"
    minutes = round(seconds / 60)
    return f", about {minutes} min left" if minutes < 60 else f", about {minutes / 60:.1f} h left"


def _start(job: _Job, key) -> tuple[Progress, Callable[[Progress], None], jax.Array]:
    """(progress, save, the draws' key): the checkpoint's progress when chains.checkpoint holds one of
    this run, else prior draws and the warm-up (then checkpointed); save(progress) writes it (or not)."""
    k_init, k_warm, k_draw = jax.random.split(key, 3)
    if job.chains.checkpoint is None:
        return _warm_up(job, k_init, k_warm), lambda done: None, k_draw
    path = Path(job.chains.checkpoint)
    check_path(path)
    mark = fingerprint(job.spec, job.sampler, job.chains, key, job.X_all, np.asarray(job.Yj))
    save = partial(save_progress, path, mark)
    positions = jax.ShapeDtypeStruct((job.chains.chains, _dim(job)), job.Xj.dtype)
    resumed = load_progress(path, mark, jax.eval_shape(job.programs.init, job.Xj, job.Yj, positions))
    if resumed is not None:
        return resumed, save, k_draw
    done = _warm_up(job, k_init, k_warm)
    save(done)
    return done, save, k_draw


@limit_blas_threads
def sample_posterior(
    spec: NetworkSpec,
    X,
    Y,
    X_test=None,
    *,
    sampler=MALA(),
    chains: Chains = Chains(),
    key=0,
    throw: bool = True,
) -> KernelEstimate:
    """Finite networks sampled from the exact Bayesian posterior (or prior), with diagnostics.

    Potential U(u) = |Y - f|^2 / (2 kappa) + |u|^2 / 2 in whitened parameters theta = sigma * u
    (THEORY 7), sampled by BlackJAX kernels with per-chain dual-averaging step sizes.

    Args:
      spec: network; X: (P, d); Y: (P,) or (P, D); X_test: optional (P_test, d).
      sampler: MALA(), HMC(n_leapfrog), NUTS() (Metropolis-adjusted) or Langevin(step_size)
        (unadjusted, biased); each carries its initial step size and dual-averaging target, and
        `prior` (sample the prior instead: likelihood off) and `space`, the parameterisation of the
        same posterior. "weights" (default): all weights and biases, readout included, whitened
        (THEORY 7). "preactivation" (T19): the readout is integrated out,
        ln p(u | Y) = -|u|^2/2 + ln N(Y; 0, C_emp(L) + kappa I), and every hidden layer whose input
        kernel has full rank (layer 1: rank C0 = P', `input_rank`; deeper: P' <= N) is parameterised by its
        pre-activations h(l) = chol(C_emp(l-1)) z(l), z ~ N(0, I) (P' x N), its weights integrated
        out; the other layers keep whitened weights. Far fewer and better-conditioned coordinates when
        d >> P' (MNIST); needs C_emp positive definite (distinct inputs; NotPositiveDefiniteError
        before sampling otherwise). The predictive then averages the readout-integrated
        m and v (T21) over the draws, in weight space the networks' own outputs.
      chains: Chains(chains, warmup, n_samples, thin, n_batches, rhat_max, progress, checkpoint).
      key: int or PRNGKey; throw: raise DiagnosticsError (carrying the estimate) when a diagnostic
        fails (default).

    Returns:
      KernelEstimate "sampled": posterior mean kernels (L+1, P', P') (layer 0 the input kernel),
      se their batch-means standard errors, estimates the batch means (chains * n_batches, L+1, P', P'),
      method the sampler's options (label "HMC", "HMC, pre-activations", ...), info SamplingInfo; result
      diagnostics_failed when the CKA R-hat exceeds chains.rhat_max or a chain's acceptance falls below 0.1.

    Example:
      >>> import critical_kernels as ck; data = ck.datasets.xor(n_train=8, n_test=0)
      >>> spec = ck.NetworkSpec(depth=1, width=10, activation="erf")
      >>> chains = ck.Chains(chains=2, warmup=100, n_samples=200, n_batches=4)
      >>> est = sample_posterior(spec, data.X, data.Y, sampler=ck.HMC(), chains=chains, throw=False)
      >>> est.kernels.shape, est.info.acceptance.shape  # C0, C1 on 8 inputs; one rate per chain
      ((2, 8, 8), (2,))
    """
    samplers = (MALA, HMC, NUTS, Langevin)
    _, X_all, Y, P = prepare(spec, X, Y, X_test, sampler=(sampler, samplers), chains=(chains, Chains))
    warmup = 0 if isinstance(sampler, Langevin) else chains.warmup
    rank = input_rank(spec, X_all) if sampler.space == "preactivation" else None
    shape = (X_all.shape[1], P, rank)
    programs = _programs(spec, sampler, shape, _Schedule(warmup, chains.thin, chains.draws_per_batch))
    job = _Job(programs, spec, sampler, chains, X_all, P, jnp.asarray(X_all), jnp.asarray(Y), rank)
    done, save, k_draw = _start(job, as_key(key))
    done = _sample_batches(job, done, k_draw, save)
    return _summarise(job, done.sums, done.per_draw, np.asarray(done.eps), done.timings, throw)


def _layer_extremes(entries: np.ndarray, depth: int, worst) -> np.ndarray:
    """(L+1,) `worst` (np.nanmax, np.min) over the kernel entries of each layer, layer 0 exact."""
    exact = 1.0 if worst is np.nanmax else np.inf
    per_layer = entries.reshape(depth, -1)
    known = ~np.all(np.isnan(per_layer), axis=1)  # a layer of constant entries has no R-hat: NaN, quietly
    out = np.full(depth, np.nan)
    out[known] = worst(per_layer[known], axis=1)
    return np.concatenate([[exact], out])


def _predictive(sums, draws: int, has_test: bool) -> Predictive | None:
    """The posterior predictive (T21) from the per-batch sums of m and m^2 + v: the batch means over
    (chain, batch) are its set of estimates (kind "batches")."""
    if not has_test:
        return None
    b_m = np.stack([s[2] for s in sums], axis=1) / draws  # (chains, batches, P_test, D)
    b_m = b_m.reshape((-1,) + b_m.shape[2:])
    b_s = (np.stack([s[3] for s in sums], axis=1) / draws).reshape(b_m.shape)
    return from_moments(b_m.mean(axis=0), b_s.mean(axis=0), "batches", b_m, b_s)


def _summarise(job: _Job, sums, per_draw, eps, timings, throw) -> KernelEstimate:
    """Means, standard errors and diagnostics from per-batch sums and per-draw records."""
    spec, sampler, chains, X_all, P = job.spec, job.sampler, job.chains, job.X_all, job.P
    draws = chains.draws_per_batch
    batch_means = np.stack([s[0] for s in sums], axis=1) / draws  # (chains, batches, L, P', P')
    n_total = batch_means.shape[0] * batch_means.shape[1] * draws
    mean = batch_means.mean(axis=(0, 1))
    second = sum(s[1].sum(axis=0) for s in sums) / n_total
    C0 = input_kernel(spec, X_all)
    mcse = standard_error(batch_means.reshape((-1,) + batch_means.shape[2:]), "batches")
    draw_var = np.maximum(second - mean**2, 0.0)
    ess_entries = np.where(mcse > 0, draw_var / np.maximum(mcse, 1e-300) ** 2, np.inf)
    rhat_entries, _ = chain_diagnostics(batch_means)
    cka_draws = np.concatenate([p[0] for p in per_draw], axis=1)  # (chains, draws, L)
    rhat_cka, ess_cka = chain_diagnostics(cka_draws)
    acceptance = np.concatenate([p[1] for p in per_draw], axis=1).mean(axis=1)
    warnings = []
    if np.any(rhat_cka > chains.rhat_max):
        warnings.append(f"R-hat of the CKA {np.max(rhat_cka):.3f} > {chains.rhat_max}")
    if not isinstance(sampler, Langevin) and np.any(acceptance < 0.1):
        warnings.append(f"acceptance rate {np.min(acceptance):.3f} < 0.1 in some chain")
    info = SamplingInfo(
        sampler=sampler,
        acceptance=acceptance,
        step_size=eps,
        rhat_cka=np.concatenate([[1.0], rhat_cka]),
        ess_cka=np.concatenate([[np.inf], ess_cka]),
        rhat_kernels=_layer_extremes(rhat_entries, spec.depth, np.nanmax),
        ess_kernels=_layer_extremes(ess_entries, spec.depth, np.min),
        grad_evals=int(sum(p[2].sum() for p in per_draw)),
        warnings=tuple(warnings),
        timings=timings,
        cka_draws=cka_draws,
    )
    C0_batches = np.broadcast_to(C0, batch_means.shape[:2] + (1,) + C0.shape)
    batches = np.concatenate([C0_batches, batch_means], axis=2)
    return finish(
        "sampled",
        np.concatenate([C0[None], mean]),
        np.concatenate([np.zeros((1,) + C0.shape), mcse]),
        info,
        Outcome(
            Result.diagnostics_failed if warnings else Result.success, "; ".join(warnings), method=sampler
        ),
        estimates=Estimates("batches", batches.reshape((-1,) + batches.shape[2:])),
        predictive=_predictive(sums, draws, has_test=len(X_all) > P),
        throw=throw,
    )
