"""MAP kernels of all layers: the forward-backward equations (T8-T12) with width annealing.

Unknowns are the conjugate kernels C~(1..L) on the training inputs. One sweep maps them to new
ones: forward (T9) C(l) = g <phi phi^T>_l + g_b in the tilted measure N(0, C(l-1)) exp(g phi^T C~(l) phi),
output (T11) C~(L) = G(C(L)) / N, backward (T10) C~(l-1) from tilted averages at C(l-1) (tilted.py).
The fixed point is found by damped Anderson-accelerated iteration, following the solution from a
large width down to the target width (T12). Test inputs enter only in a last forward pass (C~ is
zero on test rows).
"""

from __future__ import annotations

import dataclasses
import math
import time
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import linalg, progress
from ..errors import InputError, NotPositiveDefiniteError, warn_user
from ..likelihood import gradient_from_factor
from ..metrics import cka_layers, cka_layers_se, se_target
from ..nngp import input_kernel, nngp_stack
from ..numerics import as_key, limit_blas_threads, psd_cholesky
from ..predictive import kernel_predictive
from ..spec import NetworkSpec
from .base import Estimates, KernelEstimate, Outcome, Result, finish, prepare
from .growth import growth_problem, tilt_growth
from .options import Anderson, ExactGaussian, Fallback, ImportanceSampling, SecondCumulant
from .tilted import (
    ADAPTIVE,
    layer_backward,
    layer_forward,
    layer_samples,
    method_name,
    proposal,
    proposal_update,
)

EXACT_RTOL = 1e-8  # the default tolerance where the map is exact (linear phi)
MC_RTOL_FRACTION = 0.01  # of the relative Monte Carlo error 1/sqrt(M) of one sweep


class MAPInfo(NamedTuple):
    """conj_kernels: (L+1, P', P') conjugate kernels (index 0 unused, zero on test rows); n_iter:
    sweeps over all stages; residual: final relative residual; ess: (L,) smallest effective sample
    fraction per layer in the last sweep (1 where exact); widths: annealing stages solved; timings:
    seconds per stage (the first includes compilation); jitter: 0 (the compiled sweep uses no
    jitter: K = C + kappa I that is not positive definite fails the solve as not_positive_definite);
    proposals: (L, P, P) covariance S of the adaptive importance proposal of each layer in the
    whitened coordinates u of the training rows, h = u sqrt(C(l-1)) (None for the other methods);
    n_samples: Monte Carlo samples per layer of the final solve (0 where exact); rtol_met: whether
    the CKA-adaptation tolerance was met (None without one); tilt_growth: (L,) 2 g lambda* of each
    layer's tilted measure (T20: normalisable below 1, importance weights of finite variance below 1/2;
    a lower bound for relu-like phi, 0 for bounded phi); stopping_rtol: the residual tolerance the
    stages stopped on (`stage_rtol`). The method, the fallback and the
    replicas behind the SE are KernelEstimate.method, .fallback and .estimates."""

    conj_kernels: np.ndarray
    n_iter: int
    residual: float
    ess: np.ndarray
    widths: tuple
    timings: dict
    jitter: float
    proposals: np.ndarray | None = None
    n_samples: int = 0
    rtol_met: bool | None = None
    tilt_growth: np.ndarray | None = None
    stopping_rtol: float = EXACT_RTOL


class _Setup(NamedTuple):
    """One MAP solve: the network, train + test inputs, training targets (P, D), the tilted-average
    option, the solver, the annealing schedule (T12) and the key of the common random numbers."""

    spec: NetworkSpec
    X_all: np.ndarray
    Y: np.ndarray
    option: Any
    solver: Anderson
    schedule: tuple
    key: Any


class _Equations(NamedTuple):
    """The equations on the training inputs, possibly in reduced coordinates (linear phi). Traced
    arrays, so one compiled stage serves every gain, bias and kappa of the same shapes."""

    C0: jnp.ndarray  # (r, r) input kernel
    Y: jnp.ndarray  # (r, D) targets
    z: jnp.ndarray | None  # (L, M, r) common random numbers (None for linear phi)
    ones: jnp.ndarray  # the all-ones vector in these coordinates
    gains: jnp.ndarray  # (L,) g_1..g_L
    bias_vars: jnp.ndarray  # (L+1,) g_b of b0..bL
    kappa: jnp.ndarray  # ()
    proposals: tuple | None = None  # (L,) tilted.Proposal of adaptive importance sampling, else None


def _equations(spec: NetworkSpec, C0, Y, z, ones, proposals=None) -> _Equations:
    gains, bias_vars = jnp.asarray(spec.gains), jnp.asarray(spec.bias_vars)
    return _Equations(C0, Y, z, ones, gains, bias_vars, jnp.asarray(spec.kappa), proposals)


def _forward(act, depth: int, method: str, conj, eq: _Equations):
    """Kernels C(0..L) from C~(1..L) (T9), the samples of every layer, and each layer's ESS."""
    kernels, samples, health = [eq.C0], [], []
    for l in range(1, depth + 1):
        drawn = None
        if method != "linear":
            assert eq.z is not None  # common random numbers of a Monte Carlo method
            q = None if eq.proposals is None else eq.proposals[l - 1]
            drawn = layer_samples(act, kernels[-1], eq.z[l - 1], eq.Y.shape[0], q)
        C, h = layer_forward(
            act, method, eq.gains[l - 1], eq.bias_vars[l], conj[l - 1], kernels[-1], drawn, eq.ones
        )
        kernels.append(C)
        samples.append(drawn)
        health.append(h)
    return kernels, samples, jnp.stack(health)


def _backward(act, depth: int, method: str, kernels, samples, eq: _Equations, width):
    """C~(1..L) from kernels C(0..L): output (T11, NaN if K is not PD) and backward (T10) equations."""
    K = kernels[-1] + eq.kappa * jnp.eye(kernels[-1].shape[0])
    out: list = [None] * depth
    health = [jnp.ones(())] * depth
    out[-1] = gradient_from_factor(linalg.cholesky(K), eq.Y) / width
    for l in range(depth, 1, -1):
        out[l - 2], health[l - 1] = layer_backward(
            act, method, eq.gains[l - 1], out[l - 1], kernels[l - 1], samples[l - 1]
        )
    return out, jnp.stack(health)


def _sweep(act, depth: int, method: str, x, eq: _Equations, width):
    """F(x): new stacked C~(1..L) from old ones, forward (T9), output (T11), backward (T10), and
    each layer's health (smallest ESS fraction; NaN where a kernel is not finite)."""
    r = eq.C0.shape[0]
    kernels, samples, forward_health = _forward(act, depth, method, x.reshape((depth, r, r)), eq)
    out, backward_health = _backward(act, depth, method, kernels, samples, eq, width)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(C)) for C in kernels]))
    health = jnp.where(finite, jnp.minimum(forward_health, backward_health), jnp.nan)
    return jnp.stack(out).ravel(), health


_RUNNING, _CONVERGED, _NOT_PD, _ESS = 0, 1, 2, 3
_ESS_PATIENCE = 3  # sweeps in a row below min_ess_fraction that fail a stage before it converges
_MAX_REFINEMENTS = 8  # widths inserted into the annealing schedule where a stage fails on the way
_STATUS = {
    _RUNNING: Result.max_steps_reached,
    _CONVERGED: Result.success,
    _NOT_PD: Result.not_positive_definite,
    _ESS: Result.ess_collapsed,
}


class _Stage(NamedTuple):
    x: np.ndarray
    result: Result
    steps: int
    residual: float
    health: np.ndarray


class _Controls(NamedTuple):
    """The traced scalars of one annealing stage: its width and the solver's settings, so one
    compiled stage serves every width and tolerance."""

    width: float
    rtol: float
    atol: float
    max_steps: int
    damping: float
    min_health: float


class _AndersonState(NamedTuple):
    """The while loop's state: sweeps so far, the iterate x and the previous one with its residual,
    the ring buffers of differences dX, dF (memory, n) with the count of pushes, the stage status,
    relative residual, per-layer health and how many sweeps in a row had a low ESS."""

    step: Any
    x: Any
    prev_x: Any
    prev_f: Any
    dX: Any
    dF: Any
    count: Any
    status: Any
    residual: Any
    health: Any
    low: Any


def _anderson_step(c: _AndersonState, f, push, memory: int, damping):
    """(dX, dF, next x) of one Anderson step from the loop state c and the residual f = F(x) - x: the
    history of differences is a ring buffer of `memory` columns (zero columns do not count); memory 0 is
    the plain damped iteration x + damping f."""
    if memory == 0:
        return c.dX, c.dF, c.x + damping * f
    slot = c.count % memory
    dX = jnp.where(push, c.dX.at[slot].set(c.x - c.prev_x), c.dX)
    dF = jnp.where(push, c.dF.at[slot].set(f - c.prev_f), c.dF)
    gamma = jnp.linalg.lstsq(dF.T, f)[0]  # minimal norm: unused (zero) columns get zero weight
    return dX, dF, c.x + damping * f - (dX + damping * dF).T @ gamma


@partial(jax.jit, static_argnames=("act", "depth", "method", "memory"))
def _anderson(act, depth, method, memory, x, eq, ctl: _Controls):
    """Damped Anderson iteration x <- F(x) on the stacked C~ (T12), one compiled while loop: no
    host round trips inside an annealing stage. Returns (x, status, steps, residual, health)."""
    n = x.size
    init = _AndersonState(
        step=0, x=x, prev_x=x, prev_f=jnp.zeros(n), dX=jnp.zeros((memory, n)), dF=jnp.zeros((memory, n)),
        count=0, status=_RUNNING, residual=jnp.inf, health=jnp.ones(depth), low=0,
    )  # fmt: skip

    def body(c: _AndersonState) -> _AndersonState:
        fx, health = _sweep(act, depth, method, c.x, eq, ctl.width)
        f = fx - c.x
        norm_f, norm_fx = jnp.linalg.norm(f), jnp.linalg.norm(fx)
        not_pd = ~jnp.all(jnp.isfinite(health)) | ~jnp.all(jnp.isfinite(f))
        converged = norm_f <= ctl.rtol * norm_fx + ctl.atol
        # a low ESS fails the stage at the fixed point or for _ESS_PATIENCE sweeps in a row (a
        # runaway), not in a transient after a step in width or random numbers
        low_ess = jnp.min(health) < ctl.min_health
        low = jnp.where(low_ess, c.low + 1, 0)
        status = jnp.select(
            [not_pd, low_ess & (converged | (low >= _ESS_PATIENCE)), converged],
            [_NOT_PD, _ESS, _CONVERGED],
            _RUNNING,
        )
        residual = jnp.where(not_pd, jnp.inf, norm_f / jnp.maximum(norm_fx, 1e-300))
        push = c.step > 0
        dX, dF, x_next = _anderson_step(c, f, push, memory, ctl.damping)
        x_new = jnp.where(status == _CONVERGED, fx, jnp.where(status == _RUNNING, x_next, c.x))
        return _AndersonState(
            step=c.step + 1, x=x_new, prev_x=c.x, prev_f=f, dX=dX, dF=dF,
            count=c.count + push, status=status, residual=residual, health=health, low=low,
        )  # fmt: skip

    def running(c: _AndersonState):
        return (c.status == _RUNNING) & (c.step < ctl.max_steps)

    out = jax.lax.while_loop(running, body, init)
    return out.x, out.status, out.step, out.residual, out.health


def _anderson_solve(spec, method, eq: _Equations, conj, width, solver: Anderson, min_health: float) -> _Stage:
    """One annealing stage at `width`, compiled once per (activation, depth, method, memory, shapes)."""
    ctl = _Controls(
        float(width), stage_rtol(solver, eq), solver.atol, solver.max_steps, solver.damping, min_health
    )
    x, status, steps, residual, health = _anderson(
        spec.act, spec.depth, method, solver.memory, jnp.stack(conj).ravel(), eq, ctl
    )
    return _Stage(np.asarray(x), _STATUS[int(status)], int(steps), float(residual), np.asarray(health))


def stage_rtol(solver: Anderson, eq: _Equations) -> float:
    """The stopping tolerance of every stage: solver.rtol where set, else EXACT_RTOL, with M Monte Carlo
    samples per layer at least MC_RTOL_FRACTION / sqrt(M). The sampled map F is known only to
    ~1/sqrt(M) relative error, so its fixed point is no better defined; for relu-like phi the kinks move
    with C under common random numbers, F is piecewise smooth and Anderson's residual can stall far
    above 1e-8 (XOR, relu, L = 3, P = N = 200: 1.5e-6 after 300 sweeps) while 100 times below the
    Monte Carlo error."""
    if solver.rtol is not None:
        return solver.rtol
    return EXACT_RTOL if eq.z is None else max(EXACT_RTOL, MC_RTOL_FRACTION / math.sqrt(eq.z.shape[1]))


_forward_compiled = jax.jit(_forward, static_argnums=(0, 1, 2))


def _kernels(spec, method, conj, eq: _Equations) -> list:
    """The forward kernels C(0..L) only."""
    return _forward_compiled(spec.act, spec.depth, method, conj, eq)[0]


@partial(jax.jit, static_argnums=(0, 1))
def _proposal_updates(act, depth: int, conj, eq: _Equations):
    """D(1..L) of the next adaptive proposals, S = tilted E[u u^T] at the solution conj."""
    samples = _forward(act, depth, ADAPTIVE, conj, eq)[1]
    return jnp.stack([proposal_update(eq.gains[l], conj[l], samples[l]) for l in range(depth)])


def _with_proposals(eq: _Equations, D) -> _Equations:
    """The equations sampled from the adaptive proposals S = I + D (D None: untilted proposal)."""
    return eq if D is None else eq._replace(proposals=tuple(proposal(d) for d in D))


def _normalisable(spec: NetworkSpec, eq: _Equations, conj) -> bool:
    """Linear phi: every tilted Gaussian has a positive definite covariance, C(l) - g_b o o^T > 0."""
    kernels = _kernels(spec, "linear", conj, eq)
    for l in range(1, spec.depth + 1):
        tilted = np.asarray(kernels[l] - spec.bias_vars[l] * jnp.outer(eq.ones, eq.ones))
        try:
            psd_cholesky(tilted, f"tilted covariance of layer {l}")
        except NotPositiveDefiniteError:
            return False
    return True


def _range_basis(X, rtol: float = 1e-12) -> np.ndarray:
    """Orthonormal basis (P, r) of span(columns of X, 1): all kernels of a linear network lie there."""
    U, s, _ = np.linalg.svd(np.column_stack([X, np.ones(len(X))]), full_matrices=False)
    return U[:, s > rtol * s[0]]


def _schedule(width: int, widths) -> tuple:
    """The annealing schedule (T12): Anderson.widths (default 100N, 10N, 3N, N), ending at N."""
    if widths is None:
        widths = (100 * width, 10 * width, 3 * width, width)
    widths = tuple(int(w) for w in widths)
    if not widths or widths[-1] != width or any(b > a for a, b in zip(widths, widths[1:], strict=False)):
        raise InputError(
            f"solver.widths (config methods.solver.widths): a descending schedule ending at the target "
            f"width {width}, got {widths}"
        )
    return widths


def _tilted_chain(spec: NetworkSpec, tilted) -> list:
    """The tilted-average methods to try in order (a Fallback is two)."""
    linear = spec.act.is_linear
    if tilted is None:
        tilted = ExactGaussian() if linear else Fallback()
    chain = [tilted.first, tilted.then] if isinstance(tilted, Fallback) else [tilted]
    for option in chain:
        if not isinstance(option, (ExactGaussian, ImportanceSampling, SecondCumulant)):
            raise InputError(
                "tilted: expected ExactGaussian, ImportanceSampling, SecondCumulant or Fallback, "
                f"got {option!r}"
            )
        if isinstance(option, ExactGaussian) and not linear:
            raise InputError(f"tilted: ExactGaussian needs the linear activation, not {spec.act.name}")
    return chain


@limit_blas_threads
def solve_map(
    spec: NetworkSpec, X, Y, X_test=None, *, tilted=None, solver: Anderson = Anderson(), key=0, throw=True
) -> KernelEstimate:
    """MAP kernels of every layer from the forward-backward equations (T8-T12).

    Args:
      spec: network; X: (P, d); Y: (P,) or (P, D); X_test: optional (P_test, d).
      tilted: how tilted averages are computed: ExactGaussian() (linear phi; the default there),
        ImportanceSampling(...), SecondCumulant(...), or Fallback(first, then) (the default for
        nonlinear phi: importance sampling, solved again with the second-cumulant approximation if
        its effective sample size collapses; `fallback` says why). The Monte Carlo options' replicas
        are extra solves at the final width with independent random numbers, warm started from the
        solution (their spread, ddof 1, is the SE; 0: no SE); with their rtol, solve again with more
        samples (up to max_samples per layer) until the SE of the CKA adaptation (CKA - CKA_NNGP) of
        every hidden layer is at most `metrics.se_target` (info.rtol_met says whether it was met).
      solver: Anderson(...) per annealing stage; its widths are the annealing schedule, descending
        to spec.width (default 100N, 10N, 3N, N) (T12).
      key: int or PRNGKey of the common random numbers; throw: raise on failure (default).

    Returns:
      KernelEstimate "map": kernels (L+1, P', P') on train + test rows, info MAPInfo, method the
      tilted-average options that held (fallback: (the one dropped, why)); se and estimates from the
      replicas (None for linear phi, exact, or without replicas; NaN where a replica failed); with
      test rows the predictive m, v at the MAP kernel (T21; SE from the replicas). A failed solve
      keeps the last iterate's kernels and says what to change.

    Example:
      >>> import critical_kernels as ck
      >>> data = ck.datasets.xor(n_train=10, n_test=0)
      >>> spec = ck.NetworkSpec(depth=2, width=50, activation="linear", g_b=0.1)
      >>> est = solve_map(spec, data.X, data.Y)
      >>> est.ok, est.kernels.shape, est.method.label  # linear phi: the tilted averages are Gaussian
      (True, (3, 10, 10), 'exact Gaussian')
    """
    X_all, Y = prepare(spec, X, Y, X_test, solver=(solver, Anderson))[1:3]
    chain = _tilted_chain(spec, tilted)
    setup = _Setup(spec, X_all, Y, None, solver, _schedule(spec.width, solver.widths), key)
    estimate, setup, fallback = _first_to_hold(setup, chain)
    option = setup.option
    if estimate.ok and not isinstance(option, ExactGaussian) and option.replicas > 0:
        estimate = _with_replicas(setup, estimate)
        if option.rtol is not None and estimate.ok:  # too few replicas converged: no SE to grow
            estimate = _to_tolerance(setup, estimate)
    predictive = None
    if len(X_all) > len(Y) and np.all(np.isfinite(estimate.kernels[-1])):  # m and v at the MAP kernel (T21)
        predictive = kernel_predictive(estimate.kernels, Y, spec.kappa, estimate.estimates)
    estimate = dataclasses.replace(estimate, fallback=fallback, predictive=predictive)
    return estimate.raise_for_result() if throw else estimate


def _first_to_hold(setup: _Setup, chain: list):
    """Solve with each tilted-average option in turn until one keeps its effective sample size (the
    last is kept whatever happens); returns its estimate, its setup and why earlier ones were dropped."""
    fallback = None
    for i, option in enumerate(chain):
        estimate = _solve(setup._replace(option=option))
        if estimate.result is not Result.ess_collapsed or i == len(chain) - 1:
            break
        fallback = (option, estimate.message)
    return estimate, setup._replace(option=option), fallback


def _to_tolerance(setup: _Setup, estimate: KernelEstimate) -> KernelEstimate:
    """Solve again at the final width with ~ (SE / target)^2 times the samples, rounded up to a
    doubling and at most 4-fold per attempt (warm started; up to 4 attempts) until
    SE(CKA adaptation) <= se_target in every hidden layer (rtol of the option)."""
    option, Y, P = setup.option, setup.Y, len(setup.Y)
    base = cka_layers(nngp_stack(setup.spec, setup.X_all[:P]), Y)[1:]
    final = setup._replace(schedule=estimate.info.widths[-1:])
    used = option.n_samples  # of the estimate that stands
    for attempt in range(1, 6):
        assert estimate.estimates is not None  # the replicas of _with_replicas
        se = cka_layers_se(estimate.estimates.kernels, Y, kind="replicas")[1:]
        target = se_target(cka_layers(estimate.kernels, Y)[1:] - base, option.rtol)
        met = bool(np.all(se <= target))
        if met or option.n_samples >= option.max_samples or attempt == 5:
            break
        option = dataclasses.replace(option, n_samples=_grown(option, se, target))
        k = jax.random.fold_in(as_key(setup.key), 1000 + attempt)
        main = _solve(final._replace(option=option, key=k), warm=_warm(estimate, P))
        if not main.ok:  # keep the last good estimate: it is a solution with a larger SE
            break
        timings = dict(estimate.info.timings)  # every stage's time, the final width's summed over solves
        for stage, seconds in main.info.timings.items():
            timings[stage] = timings.get(stage, 0.0) + seconds
        info = main.info._replace(
            n_iter=estimate.info.n_iter + main.info.n_iter, widths=estimate.info.widths, timings=timings
        )
        grown = _with_replicas(final._replace(option=option, key=k), dataclasses.replace(main, info=info))
        if not grown.ok:  # its replicas did not converge: the last estimate with an SE stands
            break
        estimate, used = grown, option.n_samples
    if not met:
        warn_user(
            f"map: the CKA adaptation's SE is above rtol = {option.rtol} of the adaptation with "
            f"{used} samples (info.rtol_met False; raise max_samples)"
        )
    return dataclasses.replace(estimate, info=estimate.info._replace(n_samples=used, rtol_met=met))


def _grown(option, se, target) -> int:
    """The next sample count: SE ~ 1/sqrt(n) asymptotically; at few samples the fixed point
    amplifies the noise (and a self-normalised bias shows in the spread), so grow at most 4-fold per
    attempt, in doublings: the sample counts stay n_0 2^k, so attempts, replicas and later calls
    reuse the solver compiled for that shape instead of compiling one per attempt."""
    grow = min(4.0, float(np.max((se / np.maximum(target, 1e-300)) ** 2)) * 1.1)
    grow = 2 ** math.ceil(math.log2(grow))
    return int(min(option.max_samples, option.n_samples * grow))


def _warm(estimate, P):
    """Warm start of a final-width solve: the conjugate kernels and adaptive proposals of `estimate`."""
    proposals = estimate.info.proposals
    return (
        [jnp.asarray(c[:P, :P]) for c in estimate.info.conj_kernels[1:]],
        None if proposals is None else jnp.asarray(proposals) - jnp.eye(P),  # D = S - I
    )


def _with_replicas(setup: _Setup, estimate: KernelEstimate) -> KernelEstimate:
    """The estimate with se and estimates from option.replicas solves at the final width with
    independent common random numbers, warm started at its conjugate kernels. A replica that does not
    converge is left out (the SE caption counts the ones kept); with fewer than MIN_REPLICAS kept there
    is no SE, and the estimate is max_steps_reached, never a success with a NaN SE."""
    warm = _warm(estimate, len(setup.Y))
    final = setup._replace(schedule=setup.schedule[-1:])
    replicas = [estimate.kernels]
    keys = jax.random.split(jax.random.fold_in(as_key(setup.key), 1), setup.option.replicas)
    for k in keys:
        rep = _solve(final._replace(key=k), warm=warm)
        if rep.ok:
            replicas.append(rep.kernels)
    kept = len(replicas) - 1
    if kept < min(MIN_REPLICAS, len(keys)):
        message = (
            f"map: {kept} of {len(keys)} replica solves at the final width converged, too few for a "
            f"standard error; {Result.max_steps_reached.advice}"
        )
        return dataclasses.replace(estimate, result=Result.max_steps_reached, message=message)
    estimates = Estimates("replicas", np.stack(replicas))
    return dataclasses.replace(estimate, se=estimates.se(), estimates=estimates)


MIN_REPLICAS = 2  # converged replicas needed for an SE (with the main solve: a spread of 3)


class _System(NamedTuple):
    """The equations of one solve: `full` on the training rows and `eq` the same in the coordinates
    of `basis` (linear phi with rank([X, 1]) < P; else eq is full), the input kernel on train + test
    rows, the common random numbers z_all (L, M, P') and the key of the test rows' own draws."""

    full: _Equations
    eq: _Equations
    basis: np.ndarray | None
    C0_all: jnp.ndarray
    z_all: jnp.ndarray
    test_key: jax.Array


def _system(setup: _Setup, method: str) -> _System:
    """The equations and common random numbers of one solve with `method`."""
    spec, X_all, P = setup.spec, setup.X_all, len(setup.Y)
    keys = jax.random.split(as_key(setup.key), 2)
    C0_all = jnp.asarray(input_kernel(spec, X_all))
    z_all = jax.random.normal(keys[0], (spec.depth, getattr(setup.option, "n_samples", 1), X_all.shape[0]))
    z_train = None if method == "linear" else z_all[:, :, :P]
    full = _equations(spec, C0_all[:P, :P], jnp.asarray(setup.Y), z_train, jnp.ones(P))
    eq, basis = full, None
    if method == "linear":
        basis = _range_basis(X_all[:P])
        if basis.shape[1] < P:  # exact reduction to r = rank([X, 1]) coordinates
            B = jnp.asarray(basis)
            eq = _equations(spec, B.T @ full.C0 @ B, B.T @ full.Y, None, B.T @ full.ones)
    return _System(full, eq, basis, C0_all, z_all, keys[1])


def _start(spec: NetworkSpec, method: str, eq: _Equations, warm):
    """C~(1..L) and D(1..L) of the adaptive proposals S = I + D (None for the other methods) to
    start from: zero, or `warm` with its proposals re-matched to these random numbers."""
    r = eq.C0.shape[0]
    conj = [jnp.zeros((r, r))] * spec.depth if warm is None else list(warm[0])
    D = None if method != ADAPTIVE else jnp.zeros((spec.depth, r, r)) if warm is None else warm[1]
    if D is not None and warm is not None:
        for _ in range(2):
            D = _proposal_updates(spec.act, spec.depth, conj, _with_proposals(eq, D))
    return conj, D


def _solve(setup: _Setup, warm=None) -> KernelEstimate:
    """One tilted-average method through the whole annealing schedule, then the test rows. `warm`
    (nonlinear phi): (C~(1..L), D(1..L) of the adaptive proposals S = I + D or None) to start from
    instead of zero."""
    spec, method = setup.spec, method_name(setup.option)
    system = _system(setup, method)
    conj, D = _start(spec, method, system.eq, warm)
    importance = method.startswith("importance")
    min_health = setup.option.min_ess_fraction if importance else 0.0
    conj, stage_eq, stages, solved, timings = _anneal(
        spec, method, system.eq, conj, D, setup.schedule, setup.solver, min_health
    )
    stage = stages[-1]
    outcome = Outcome(stage.result, "" if stage.result.ok else _detail(stage, solved[-1], min_health))
    if method == "linear" and stage.result.ok and not _normalisable(spec, system.eq, conj):
        detail = f"the tilted Gaussian is not normalisable (C'^-1 - 2g C~ not > 0) at N={setup.schedule[-1]}"
        outcome = Outcome(Result.not_positive_definite, detail)
    conj = _lifted(spec, method, system, conj, setup.schedule[-1])
    kernels, conj_all = _test_rows(spec, method, system, conj, stage_eq.proposals)
    growth = _growth(spec, kernels, conj_all, len(setup.Y))
    if outcome.result.ok and growth_problem(growth):
        outcome = Outcome(Result.not_positive_definite, growth_problem(growth))
    info = MAPInfo(
        conj_kernels=np.concatenate([np.zeros((1,) + system.C0_all.shape), np.asarray(jnp.stack(conj_all))]),
        n_iter=sum(s.steps for s in stages),
        residual=float(stage.residual),
        ess=stage.health if importance else np.ones(spec.depth),
        widths=tuple(solved),
        timings=timings,
        jitter=0.0,
        proposals=None if D is None else np.stack([q.root @ q.root for q in stage_eq.proposals]),  # S
        n_samples=0 if method == "linear" else system.z_all.shape[1],
        tilt_growth=growth,
        stopping_rtol=stage_rtol(setup.solver, system.eq),
    )
    return finish("map", kernels, None, info, outcome._replace(method=setup.option), throw=False)


def _growth(spec: NetworkSpec, kernels, conj_all, P: int) -> np.ndarray:
    """(L,) 2 g_l lambda*_l of the solution's tilted measures on the training rows (T20; normalisable < 1)."""
    return np.array(
        [
            tilt_growth(spec.act, spec.gains[l - 1], conj_all[l - 1][:P, :P], kernels[l - 1][:P, :P])
            for l in range(1, spec.depth + 1)
        ]
    )


def _lifted(spec: NetworkSpec, method: str, system: _System, conj, width) -> list:
    """C~(1..L) back in the original coordinates: C = U S U^T, then T11 and T10 there."""
    if system.eq is system.full:
        return conj
    B = jnp.asarray(system.basis)
    lifted = [system.full.C0] + [B @ S @ B.T for S in _kernels(spec, method, conj, system.eq)[1:]]
    return _backward(spec.act, spec.depth, method, lifted, [None] * spec.depth, system.full, width)[0]


def _test_rows(spec: NetworkSpec, method: str, system: _System, conj, proposals):
    """The final forward pass on train + test inputs, C~ zero on test rows, with the proposals of
    the last stage (the training rows are the draws of the solution): (kernels, C~ on all rows)."""
    C0_all, z_all, P = system.C0_all, system.z_all, system.full.C0.shape[0]
    conj_all = [jnp.zeros(C0_all.shape).at[:P, :P].set(c) for c in conj]
    z_joint = jax.random.normal(system.test_key, z_all.shape).at[:, :, :P].set(z_all[:, :, :P])
    z_joint = None if method == "linear" else z_joint
    joint = _equations(spec, C0_all, system.full.Y, z_joint, jnp.ones(len(C0_all)), proposals)
    return np.asarray(jnp.stack(_kernels(spec, method, conj_all, joint))), conj_all


def _anneal(spec, method, eq: _Equations, conj, D, schedule, solver, min_health):
    """The annealing stages (T12) from conj (and adaptive proposals S = I + D) down the schedule,
    until one fails. Returns (conj, the last stage's equations, [_Stage], widths solved, timings).
    The adaptive proposals are fixed within a stage, so each stage iterates one map, and are
    re-estimated at its solution for the next stage."""
    r = eq.C0.shape[0]
    prev_width, pending, solved, stages, timings = schedule[0], list(schedule), [], [], {}
    with progress.task("MAP stages", len(schedule)) as update:
        while pending:
            width = pending.pop(0)
            update(len(solved), f"N = {width}")
            start = time.perf_counter()
            scale = prev_width / width  # C~, and with it the tilt of the proposal, scales as 1/N (T12)
            stage_eq = _with_proposals(eq, None if D is None else D * scale)
            stages.append(
                _anderson_solve(spec, method, stage_eq, [c * scale for c in conj], width, solver, min_health)
            )
            timings[f"N={width}"] = timings.get(f"N={width}", 0.0) + time.perf_counter() - start
            mid = round(math.sqrt(prev_width * width))
            transient = stages[-1].result in (Result.ess_collapsed, Result.not_positive_definite)
            if transient and prev_width > mid > width and len(stages) < len(schedule) + _MAX_REFINEMENTS:
                # the first sweeps after a long step can overshoot, collapse the ESS or lose positive
                # definiteness on the way to a fixed point that has neither: a shorter step first
                pending[:0] = [mid, width]
                continue
            conj = list(jnp.asarray(stages[-1].x.reshape((spec.depth, r, r))))
            if D is not None:
                D = _proposal_updates(spec.act, spec.depth, conj, stage_eq)
            solved.append(width)
            prev_width = width
            if not stages[-1].result.ok:
                break
    return conj, stage_eq, stages, solved, timings


def _detail(stage: _Stage, width: int, min_ess: float) -> str:
    """What happened in a failed annealing stage."""
    if stage.result is Result.ess_collapsed:
        ess = stage.health.min()
        return f"importance-sampling ESS fell to {ess:.3f} (< min_ess_fraction={min_ess}) at N={width}"
    if stage.result is Result.not_positive_definite:
        return f"an iterate lost positive definiteness at N={width} (sweep {stage.steps})"
    return f"relative residual {stage.residual:.2e} after {stage.steps} sweeps at N={width}"
