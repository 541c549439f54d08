"""Posterior sampling of finite networks with BlackJAX: MALA, HMC, NUTS, unadjusted Langevin.

Chains run under vmap, every loop is a lax.scan, and the step size of each chain is tuned by
dual averaging during warm-up. Sampling runs in chunks so a progress bar can advance between
compiled calls; each chunk's per-chain kernel means are the batch means behind the Monte Carlo
standard errors of kernel entries (THEORY section 7).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.step_size import dual_averaging_adaptation
from rich.progress import Progress

from ..errors import InputError
from ..fluctuations import as_key
from ..metrics import cka_layers
from ..nngp import input_kernel, nngp_kernels
from ..numerics import check_inputs, check_targets
from ..spec import NetworkSpec
from .diagnostics import batch_mcse, chain_diagnostics
from .network import Network

SAMPLERS = ("mala", "hmc", "nuts", "langevin")
TARGET_ACCEPT = {"mala": 0.57, "hmc": 0.75, "nuts": 0.8}


@dataclass(frozen=True)
class PosteriorResult:
    """Sampled posterior (or prior) of a finite network.

    kernels: (L+1, P', P') posterior mean kernels (layer 0 is the input kernel); mcse: their Monte
    Carlo standard errors (batch means); cka: (L+1,) CKA of the mean kernels; cka_mcse;
    rhat_cka, ess_cka: (L+1,) diagnostics of the per-draw CKA; rhat_kernels, ess_kernels: (L+1,)
    worst R-hat and smallest ESS over kernel entries, from the n_batches batch means per chain
    (reported, not used to flag: with ~10 batches per chain R-hat is noisy); acceptance, step_size:
    (chains,); f_test: (P_test, D) mean prediction or None; nngp: (L+1, P', P'); ok: every
    diagnostic passed; warnings: what failed; sampler; grad_evals; timings.
    """

    kernels: np.ndarray
    mcse: np.ndarray
    cka: np.ndarray
    cka_mcse: np.ndarray
    rhat_cka: np.ndarray
    ess_cka: np.ndarray
    rhat_kernels: np.ndarray
    ess_kernels: np.ndarray
    acceptance: np.ndarray
    step_size: np.ndarray
    f_test: np.ndarray | None
    nngp: np.ndarray
    ok: bool
    warnings: tuple
    sampler: str
    grad_evals: int
    timings: dict


def _kernel_fns(sampler: str, log_density, dim: int, n_leapfrog: int):
    """(init, step(key, state, step_size) -> (state, acceptance, gradient evaluations))."""
    if sampler == "mala":
        kernel = blackjax.mala.build_kernel()

        def step(key, state, eps):
            state, info = kernel(key, state, log_density, eps)
            return state, info.acceptance_rate, 1

        return partial(blackjax.mala.init, logdensity_fn=log_density), step
    if sampler in ("hmc", "nuts"):
        kernel = blackjax.hmc.build_kernel() if sampler == "hmc" else blackjax.nuts.build_kernel()
        extra = (n_leapfrog,) if sampler == "hmc" else ()

        def step(key, state, eps):
            state, info = kernel(key, state, log_density, eps, jnp.ones(dim), *extra)
            evals = n_leapfrog if sampler == "hmc" else info.num_integration_steps
            return state, info.acceptance_rate, evals

        return partial(blackjax.hmc.init, logdensity_fn=log_density), step

    def langevin(key, state, eps):  # unadjusted: Euler-Maruyama, no accept step
        position, _, grad = state
        position = position + eps * grad + jnp.sqrt(2 * eps) * jax.random.normal(key, position.shape)
        logp, grad = jax.value_and_grad(log_density)(position)
        return blackjax.mcmc.mala.MALAState(position, logp, grad), jnp.ones(()), 1

    return partial(blackjax.mala.init, logdensity_fn=log_density), langevin


def _cka(K, Y):
    """CKA (T16) in JAX for per-draw diagnostics; K (P, P), Y (P, D)."""

    def centre(A):
        A = A - A.mean(axis=0, keepdims=True)
        return A - A.mean(axis=1, keepdims=True)

    Kc, Tc = centre(K), centre(Y @ Y.T)
    return jnp.sum(Kc * Tc) / jnp.sqrt(jnp.sum(Kc * Kc) * jnp.sum(Tc * Tc))


def sample_posterior(
    spec: NetworkSpec,
    X,
    Y,
    X_test=None,
    sampler: str = "mala",
    *,
    chains: int = 4,
    warmup: int = 1000,
    samples: int = 1000,
    thin: int = 10,
    key=0,
    prior: bool = False,
    step_size: float | None = None,
    n_leapfrog: int = 16,
    target_accept: float | None = None,
    n_batches: int = 10,
    rhat_max: float = 1.01,
    progress: bool = False,
) -> PosteriorResult:
    """Finite networks sampled from the exact Bayesian posterior (or prior), with diagnostics.

    Potential U(u) = |Y - f|^2 / (2 kappa) + |u|^2 / 2 in whitened parameters theta = sigma * u
    (THEORY 7), sampled by BlackJAX kernels with per-chain dual-averaging step sizes.

    Args:
      spec: network; X: (P, d); Y: (P,) or (P, D); X_test: optional (P_test, d).
      sampler: "mala", "hmc", "nuts" (Metropolis-adjusted) or "langevin" (unadjusted; give step_size).
      chains: independent chains (vmap); warmup: adaptation steps; samples: steps after warm-up
        per chain; thin: steps between recorded draws; key: int or PRNGKey.
      prior: sample the prior instead (likelihood off).
      step_size: initial (or, for langevin, fixed) step size; n_leapfrog: HMC integration steps;
      target_accept: dual-averaging target (defaults mala 0.57, hmc 0.75, nuts 0.8).
      n_batches: chunks per chain, the batch means behind kernel-entry standard errors.
      rhat_max: flag runs whose CKA R-hat exceeds it; progress: show a progress bar.

    Returns:
      PosteriorResult; `ok` is False (and `warnings` says why) when a diagnostic failed.

    Example:
      >>> post = sample_posterior(spec, X, Y, sampler="mala", chains=4, key=0); post.cka[-1]
    """
    if sampler not in SAMPLERS:
        raise InputError(f"sampler: unknown {sampler!r}; choose one of {SAMPLERS}")
    for name, value in (
        ("chains", chains),
        ("warmup", warmup),
        ("samples", samples),
        ("thin", thin),
        ("n_batches", n_batches),
    ):
        if int(value) != value or value < (0 if name == "warmup" else 1):
            raise InputError(f"{name}: must be a positive integer, got {value!r}")
    draws_per_batch = samples // (thin * n_batches)
    if draws_per_batch < 1:
        raise InputError(f"samples: need at least thin * n_batches = {thin * n_batches} steps, got {samples}")
    X_all = check_inputs(X, X_test)
    P = np.shape(X)[0]
    Y = check_targets(Y, P, spec.n_out)
    net = Network(spec, X_all.shape[1])
    Xj, Yj = jnp.asarray(X_all), jnp.asarray(Y)

    def log_density(u):
        return net.log_density(u, Xj[:P], Yj, prior)

    init, step = _kernel_fns(sampler, log_density, net.dim, n_leapfrog)
    k_init, k_warm, k_draw = jax.random.split(as_key(key), 3)
    timings = {}

    start = time.perf_counter()
    states = jax.vmap(init)(jax.random.normal(k_init, (chains, net.dim)))
    eps0 = step_size if step_size is not None else 0.1
    da_init, da_update, da_final = dual_averaging_adaptation(target_accept or TARGET_ACCEPT.get(sampler, 0.6))

    @jax.jit
    def warm(states, keys):
        def one(state, key):
            def body(carry, k):
                state, da = carry
                state, acc, _ = step(k, state, jnp.exp(da.log_step_size))
                return (state, da_update(da, jnp.nan_to_num(acc))), None

            (state, da), _ = jax.lax.scan(body, (state, da_init(eps0)), jax.random.split(key, warmup))
            return state, da_final(da)

        return jax.vmap(one)(states, keys)

    if sampler == "langevin" or warmup == 0:
        eps = jnp.full(chains, eps0)
    else:
        states, eps = warm(states, jax.random.split(k_warm, chains))
    timings["warmup"] = time.perf_counter() - start

    @jax.jit
    def batch(states, eps, keys):
        def one(state, eps, key):
            def record(carry, k):
                state, sums = carry

                def move(c, kk):
                    state, acc, evals = c
                    state, a, e = step(kk, state, eps)
                    return (state, acc + a, evals + e), None

                (state, acc, evals), _ = jax.lax.scan(move, (state, 0.0, 0), jax.random.split(k, thin))
                C = net.kernels(state.position, Xj)
                _, f = net.forward(state.position, Xj)
                sums = (sums[0] + C, sums[1] + C * C, sums[2] + f[P:])
                ckas = jax.vmap(lambda K: _cka(K[:P, :P], Yj))(C)
                return (state, sums), (ckas, acc / thin, evals)

            L, Pa = spec.depth, X_all.shape[0]
            zeros = (jnp.zeros((L, Pa, Pa)), jnp.zeros((L, Pa, Pa)), jnp.zeros((Pa - P, spec.n_out)))
            (state, sums), per_draw = jax.lax.scan(
                record, (state, zeros), jax.random.split(key, draws_per_batch)
            )
            return state, sums, per_draw

        return jax.vmap(one)(states, eps, keys)

    start = time.perf_counter()
    sums, per_draw = [], []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"{sampler}: {chains} chains", total=n_batches)
        timings["batches"] = []  # the first includes compilation
        for k in jax.random.split(k_draw, n_batches):
            tick = time.perf_counter()
            states, batch_sums, batch_draws = batch(states, eps, jax.random.split(k, chains))
            sums.append(jax.tree.map(np.asarray, batch_sums))
            per_draw.append(jax.tree.map(np.asarray, batch_draws))
            timings["batches"].append(time.perf_counter() - tick)
            bar.advance(task)
    timings["sampling"] = time.perf_counter() - start
    return _summarise(
        spec,
        X,
        X_test,
        Y,
        sampler,
        sums,
        per_draw,
        np.asarray(eps),
        draws_per_batch,
        rhat_max,
        timings,
        X_all,
    )


def _summarise(spec, X, X_test, Y, sampler, sums, per_draw, eps, draws_per_batch, rhat_max, timings, X_all):
    """Means, standard errors and diagnostics from per-batch sums and per-draw records."""
    batch_means = np.stack([s[0] for s in sums], axis=1) / draws_per_batch  # (chains, batches, L, P', P')
    n_total = batch_means.shape[0] * batch_means.shape[1] * draws_per_batch
    mean = batch_means.mean(axis=(0, 1))
    second = sum(s[1].sum(axis=0) for s in sums) / n_total
    C0 = input_kernel(spec, X_all)
    mcse = batch_mcse(batch_means)
    draw_var = np.maximum(second - mean**2, 0.0)
    ess_entries = np.where(mcse > 0, draw_var / np.maximum(mcse, 1e-300) ** 2, np.inf)
    rhat_entries, _ = chain_diagnostics(batch_means)
    ckas = np.concatenate([p[0] for p in per_draw], axis=1)  # (chains, draws, L)
    rhat_cka, ess_cka = chain_diagnostics(ckas)
    kernels = np.concatenate([C0[None], mean])
    cka = cka_layers(kernels, Y)
    batch_cka = np.array(
        [[cka_layers(np.concatenate([C0[None], b]), Y)[1:] for b in chain] for chain in batch_means]
    )
    acceptance = np.concatenate([p[1] for p in per_draw], axis=1).mean(axis=1)
    grad_evals = int(sum(p[2].sum() for p in per_draw))
    f_test = None
    if X_test is not None:
        f_test = sum(s[2].sum(axis=0) for s in sums) / n_total
    one = np.ones(1)
    rhat_kernels = np.concatenate([one, np.nanmax(rhat_entries.reshape(spec.depth, -1), axis=1)])
    warnings = []
    if np.any(rhat_cka > rhat_max):
        warnings.append(f"R-hat of the CKA {np.max(rhat_cka):.3f} > {rhat_max}")
    if sampler != "langevin" and np.any(acceptance < 0.1):
        warnings.append(f"acceptance rate {np.min(acceptance):.3f} < 0.1 in some chain")
    return PosteriorResult(
        kernels=kernels,
        mcse=np.concatenate([np.zeros((1,) + C0.shape), mcse]),
        cka=cka,
        cka_mcse=np.concatenate(
            [[0.0], batch_cka.reshape(-1, spec.depth).std(axis=0, ddof=1) / np.sqrt(batch_cka[..., 0].size)]
        ),
        rhat_cka=np.concatenate([one, rhat_cka]),
        ess_cka=np.concatenate([[np.inf], ess_cka]),
        rhat_kernels=rhat_kernels,
        ess_kernels=np.concatenate([[np.inf], np.min(ess_entries.reshape(spec.depth, -1), axis=1)]),
        acceptance=acceptance,
        step_size=eps,
        f_test=f_test,
        nngp=nngp_kernels(spec, X, X_test),
        ok=not warnings,
        warnings=tuple(warnings),
        sampler=sampler,
        grad_evals=grad_evals,
        timings=timings,
    )
