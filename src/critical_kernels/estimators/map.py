"""MAP kernels of all layers: the forward-backward equations (T8-T12) with width annealing.

Unknowns are the conjugate kernels C~(1..L) on the training inputs. One sweep maps them to new
ones: forward (T9) C(l) = g <phi phi^T>_l + g_b in the tilted measure N(0, C(l-1)) exp(g phi^T C~(l) phi),
output (T11) C~(L) = G(C(L)) / N, backward (T10) C~(l-1) from tilted averages at C(l-1) (tilted.py).
The fixed point is found by damped Anderson-accelerated iteration, following the solution from a
large width down to the target width (T12). Test inputs enter only in a last forward pass (C~ is
zero on test rows).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError, NotPositiveDefiniteError
from ..likelihood import likelihood_gradient
from ..nngp import input_kernel
from ..numerics import as_key, check_inputs, check_targets, limit_blas_threads, psd_cholesky
from ..spec import NetworkSpec
from .base import KernelEstimate, Result, finish
from .options import Anderson, ExactGaussian, Fallback, ImportanceSampling, SecondCumulant
from .tilted import layer_backward, layer_forward, method_name


class MAPInfo(NamedTuple):
    """conj_kernels: (L+1, P', P') conjugate kernels (index 0 unused, zero on test rows);
    tilted: the tilted-average method that produced the kernels ("linear", "importance",
    "cumulant"); fallback: why an earlier method was abandoned ("" if none); n_iter: sweeps over
    all stages; residual: final relative residual; ess: (L,) smallest effective sample fraction per
    layer in the last sweep (1 where exact); widths: annealing schedule; timings: seconds per stage;
    jitter: largest Cholesky jitter of K."""

    conj_kernels: np.ndarray
    tilted: str
    fallback: str
    n_iter: int
    residual: float
    ess: np.ndarray
    widths: tuple
    timings: dict
    jitter: float


@dataclass
class _Problem:
    """The equations on the training inputs, possibly in reduced coordinates (linear phi)."""

    spec: NetworkSpec
    method: str
    C0: jnp.ndarray
    Y: np.ndarray
    z: jnp.ndarray | None  # (L, M, P) common random numbers
    ones: jnp.ndarray  # the all-ones vector in these coordinates
    jitter: float = 0.0  # largest Cholesky jitter of K seen

    def forward(self, conj, C0=None, z=None, ones=None):
        """Kernels C(0..L) from C~(1..L) (T9), and the health (ESS) of each layer."""
        spec, z = self.spec, self.z if z is None else z
        ones = self.ones if ones is None else ones
        kernels, health = [self.C0 if C0 is None else C0], []
        for l in range(1, spec.depth + 1):
            C, h = layer_forward(
                spec.act,
                self.method,
                spec.gains[l - 1],
                spec.bias_vars[l],
                conj[l - 1],
                kernels[-1],
                None if z is None else z[l - 1],
                ones,
            )
            kernels.append(C)
            health.append(h)
        return kernels, health

    def backward(self, kernels, width):
        """C~(1..L) from kernels C(0..L): output (T11) and backward (T10) equations."""
        spec = self.spec
        out, health = [None] * spec.depth, [jnp.ones(())] * spec.depth
        grad = likelihood_gradient(np.asarray(kernels[-1]), self.Y, spec.kappa)
        self.jitter = max(self.jitter, grad.jitter)
        out[-1] = jnp.asarray(grad.G / width)
        for l in range(spec.depth, 1, -1):
            out[l - 2], health[l - 1] = layer_backward(
                spec.act,
                self.method,
                spec.gains[l - 1],
                out[l - 1],
                kernels[l - 1],
                None if self.z is None else self.z[l - 1],
            )
        return out, health

    def sweep(self, conj, width):
        """New conjugate kernels C~(1..L) from old ones: forward (T9), output (T11), backward (T10)."""
        kernels, health = self.forward(conj)
        if not all(bool(jnp.isfinite(C).all()) for C in kernels):  # a variance went negative inside T9
            raise NotPositiveDefiniteError("MAP iterate: a forward kernel is not finite")
        out, back_health = self.backward(kernels, width)
        return out, np.array([float(jnp.minimum(a, b)) for a, b in zip(health, back_health, strict=True)])


class _Stage(NamedTuple):
    x: np.ndarray
    result: Result
    steps: int
    residual: float
    health: np.ndarray


def _anderson_solve(problem: _Problem, conj, width, solver: Anderson, min_health: float) -> _Stage:
    """Damped Anderson iteration x <- F(x) on the stacked C~ (T12)."""
    shape = (problem.spec.depth,) + problem.C0.shape
    x = np.stack([np.asarray(c) for c in conj]).ravel()
    dx_hist, df_hist = [], []
    prev_x = prev_f = None
    residual, health = np.inf, np.ones(problem.spec.depth)
    for step in range(1, solver.max_steps + 1):
        try:
            new, health = problem.sweep(list(jnp.asarray(x.reshape(shape))), width)
        except NotPositiveDefiniteError:  # the iterate left the PD cone: a failed solve, with advice
            return _Stage(x, Result.not_positive_definite, step, np.inf, np.full(problem.spec.depth, np.nan))
        if not np.all(np.isfinite(health)):
            return _Stage(x, Result.not_positive_definite, step, residual, health)
        if health.min() < min_health:
            return _Stage(x, Result.ess_collapsed, step, residual, health)
        fx = np.stack([np.asarray(c) for c in new]).ravel()
        f = fx - x
        if not np.all(np.isfinite(f)):
            return _Stage(x, Result.not_positive_definite, step, np.inf, health)
        residual = np.linalg.norm(f) / max(np.linalg.norm(fx), 1e-300)
        if np.linalg.norm(f) <= solver.rtol * np.linalg.norm(fx) + solver.atol:
            return _Stage(fx, Result.success, step, residual, health)
        if prev_x is not None:
            dx_hist.append(x - prev_x)
            df_hist.append(f - prev_f)
            dx_hist, df_hist = dx_hist[-solver.memory :], df_hist[-solver.memory :]
        prev_x, prev_f = x, f
        x_next = x + solver.damping * f
        if dx_hist:
            dF = np.stack(df_hist, axis=1)
            gamma = np.linalg.lstsq(dF, f, rcond=None)[0]
            x_next = x_next - (np.stack(dx_hist, axis=1) + solver.damping * dF) @ gamma
        x = x_next
    return _Stage(x, Result.max_steps_reached, solver.max_steps, residual, health)


def _normalisable(problem: _Problem, conj) -> bool:
    """Linear phi: every tilted Gaussian has a positive definite covariance, C(l) - g_b o o^T > 0."""
    kernels, _ = problem.forward(conj)
    for l in range(1, problem.spec.depth + 1):
        tilted = np.asarray(kernels[l] - problem.spec.bias_vars[l] * jnp.outer(problem.ones, problem.ones))
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
    if widths is None:
        widths = (100 * width, 10 * width, 3 * width, width)
    widths = tuple(int(w) for w in widths)
    if not widths or widths[-1] != width or any(b > a for a, b in zip(widths, widths[1:], strict=False)):
        raise InputError(f"widths: a descending schedule ending at the target width {width}, got {widths}")
    return widths


def _tilted_chain(spec: NetworkSpec, tilted) -> list:
    """The tilted-average methods to try in order (a Fallback is two)."""
    linear = spec.act.name == "linear" and spec.act.has_closed_form
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
    spec: NetworkSpec,
    X,
    Y,
    X_test=None,
    *,
    tilted=None,
    solver: Anderson = Anderson(),
    widths=None,
    key=0,
    throw: bool = True,
) -> KernelEstimate:
    """MAP kernels of every layer from the forward-backward equations (T8-T12).

    Args:
      spec: network; X: (P, d); Y: (P,) or (P, D); X_test: optional (P_test, d).
      tilted: how tilted averages are computed: ExactGaussian() (linear phi; the default there),
        ImportanceSampling(n_samples, min_ess), SecondCumulant(n_samples), or
        Fallback(first, then) (the default for nonlinear phi: importance sampling, solved again with
        the second-cumulant approximation if its effective sample size collapses; info says which ran).
      solver: Anderson(rtol, atol, max_steps, damping, memory), per annealing stage.
      widths: annealing schedule, descending to spec.width (default 100N, 10N, 3N, N) (T12).
      key: int or PRNGKey of the common random numbers; throw: raise on failure (default).

    Returns:
      KernelEstimate "map": kernels (L+1, P', P') on train + test rows, info MAPInfo; se is None
      (exact for linear phi; the Monte Carlo error of the tilted averages is not estimated yet). A
      failed solve keeps the last iterate's kernels and says what to change.

    Example:
      >>> est = solve_map(NetworkSpec(depth=3, width=200, g_w=1.5, g_b=0.1), X, Y, X_test)
      >>> est.ok, est.info.tilted, est.info.n_iter
    """
    chain = _tilted_chain(spec, tilted)
    X_all = check_inputs(X, X_test)
    P = np.shape(X)[0]
    Y = check_targets(Y, P, spec.n_out)
    schedule = _schedule(spec.width, widths)
    fallback = ""
    for i, option in enumerate(chain):
        estimate = _solve(spec, X_all, Y, option, solver, schedule, key, fallback)
        if estimate.result is not Result.ess_collapsed or i == len(chain) - 1:
            break
        fallback = f"{method_name(option)}: {estimate.message}"
    return estimate.raise_for_result() if throw else estimate


def _solve(spec, X_all, Y, option, solver, schedule, key, fallback) -> KernelEstimate:
    """One tilted-average method through the whole annealing schedule, then the test rows."""
    P = len(Y)
    method = method_name(option)
    n_samples = getattr(option, "n_samples", 1)
    keys = jax.random.split(as_key(key), 2)
    C0_all = jnp.asarray(input_kernel(spec, X_all))
    z_all = jax.random.normal(keys[0], (spec.depth, n_samples, X_all.shape[0]))
    full = _Problem(spec, method, C0_all[:P, :P], Y, z_all[:, :, :P], jnp.ones(P))
    problem, basis = full, None
    if method == "linear":
        basis = _range_basis(X_all[:P])
        if basis.shape[1] < P:  # exact reduction to r = rank([X, 1]) coordinates
            B = jnp.asarray(basis)
            problem = _Problem(spec, method, B.T @ full.C0 @ B, basis.T @ Y, None, B.T @ full.ones)
    r = problem.C0.shape[0]

    conj = [jnp.zeros((r, r))] * spec.depth
    timings, n_iter, detail = {}, 0, ""
    stage = _Stage(None, Result.success, 0, 0.0, np.ones(spec.depth))
    prev_width = schedule[0]
    min_health = option.min_ess if method == "importance" else 0.0
    for width in schedule:
        start = time.perf_counter()
        conj = [c * (prev_width / width) for c in conj]  # C~ scales as 1/N: predictor for the stage
        stage = _anderson_solve(problem, conj, width, solver, min_health)
        n_iter += stage.steps
        timings[f"N={width}"] = time.perf_counter() - start
        conj = list(jnp.asarray(stage.x.reshape((spec.depth, r, r))))
        prev_width = width
        if not stage.result.ok:
            detail = _detail(stage, width, min_health)
            break
    result = stage.result
    if method == "linear" and result.ok and not _normalisable(problem, conj):
        result = Result.not_positive_definite
        detail = f"the tilted Gaussian is not normalisable (C'^-1 - 2g C~ not > 0) at N={schedule[-1]}"
    if problem is not full:  # back to the original coordinates: C = U S U^T, then T11 and T10 there
        B = jnp.asarray(basis)
        reduced, _ = problem.forward(conj)
        conj, _ = full.backward([full.C0] + [B @ S @ B.T for S in reduced[1:]], schedule[-1])
    # final forward pass on train + test inputs, C~ zero on test rows
    conj_all = [jnp.zeros(C0_all.shape).at[:P, :P].set(c) for c in conj]
    z_joint = jax.random.normal(keys[1], z_all.shape).at[:, :, :P].set(z_all[:, :, :P])
    kernels, _ = full.forward(conj_all, C0=C0_all, z=z_joint, ones=jnp.ones(len(C0_all)))
    info = MAPInfo(
        conj_kernels=np.concatenate([np.zeros((1,) + C0_all.shape), np.asarray(jnp.stack(conj_all))]),
        tilted=method,
        fallback=fallback,
        n_iter=n_iter,
        residual=float(stage.residual),
        ess=stage.health if method == "importance" else np.ones(spec.depth),
        widths=schedule,
        timings=timings,
        jitter=max(full.jitter, problem.jitter),
    )
    return finish(
        "map",
        np.asarray(jnp.stack(kernels)),
        None,
        info,
        result=result,
        detail=detail,
        throw=False,
        jitter=info.jitter,
    )


def _detail(stage: _Stage, width: int, min_ess: float) -> str:
    """What happened in a failed annealing stage."""
    if stage.result is Result.ess_collapsed:
        return f"importance-sampling ESS fell to {stage.health.min():.3f} (< min_ess={min_ess}) at N={width}"
    if stage.result is Result.not_positive_definite:
        return f"an iterate lost positive definiteness at N={width} (sweep {stage.steps})"
    return f"relative residual {stage.residual:.2e} after {stage.steps} sweeps at N={width}"
