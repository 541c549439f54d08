"""MAP kernels of all layers: the forward-backward equations (T8-T12) with width annealing.

Unknowns are the conjugate kernels C~(1..L) on the training inputs. One sweep maps them to new
ones: forward (T9) C(l) = g <phi phi^T>_l + g_b in the tilted measure N(0, C(l-1)) exp(g phi^T C~(l) phi),
output (T11) C~(L) = G(C(L)) / N, backward (T10) C~(l-1) from tilted averages at C(l-1). The fixed
point is found by damped Anderson-accelerated iteration, following the solution from a large
width down to the target width (T12). Test inputs enter only in a last forward pass (C~ is zero
on test rows).

Tilted averages:
  "linear"     exact Gaussian formulas (T9-T10 closed form);
  "importance" self-normalised importance sampling with common random numbers, the closed-form
               untilted averages as control variates, and an effective-sample-size monitor;
  "cumulant"   second-cumulant approximation: the tilt expanded to first order (THEORY section 4).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .activations import Activation, gaussian_moments
from .errors import ConvergenceError, InputError, NotPositiveDefiniteError
from .fluctuations import as_key, psd_sqrt
from .metrics import cka_layers
from .nngp import input_kernel, nngp_kernels, response
from .numerics import check_inputs, check_targets, psd_cholesky, symmetrize
from .perturbative import likelihood_gradient
from .predict import kernel_predict
from .spec import NetworkSpec

METHODS = ("auto", "linear", "importance", "cumulant")


@dataclass(frozen=True)
class MAPResult:
    """Solution of the forward-backward equations.

    kernels: (L+1, P', P') MAP kernels on train + test inputs; conj_kernels: (L+1, P', P')
    conjugate kernels (index 0 unused, zero on test rows); nngp: (L+1, P', P'); cka: (L+1,);
    converged; n_iter: sweeps over all stages; residual: final relative residual;
    ess: (L,) smallest effective sample fraction per layer in the last sweep (1 where exact);
    method: what ran; widths: annealing schedule; f_test: kernel predictor on test inputs
    (P_test, D), None without test inputs or convergence; timings: seconds per stage; message: what happened.
    """

    kernels: np.ndarray
    conj_kernels: np.ndarray
    nngp: np.ndarray
    cka: np.ndarray
    converged: bool
    n_iter: int
    residual: float
    ess: np.ndarray
    method: str
    widths: tuple
    f_test: np.ndarray | None
    timings: dict = field(default_factory=dict)
    message: str = ""


# --- tilted averages of one layer ---------------------------------------------------------


def _linear_factor(g, C_prev, Ct):
    """I - 2 g C' C~ of the closed-form tilted Gaussian (T9-T10); whether the tilted measure
    is normalisable (C'^-1 - 2g C~ > 0) is checked on the converged kernels, not per sweep."""
    return jnp.eye(len(Ct)) - 2.0 * g * C_prev @ Ct


def _samples(act: Activation, C_prev, z):
    h = z @ psd_sqrt(C_prev)
    return act.fn(h), act.d1(h), act.d2(h)


def _weights(method, s, s_mean):
    """Sample weights a (tilted minus untilted) and b (tilted) with ESS fraction (T9-T10)."""
    M = s.shape[0]
    if method == "importance":
        w = jax.nn.softmax(s)
        return w - 1.0 / M, w, 1.0 / (M * jnp.sum(w**2))
    # second cumulant: exp(s) linearised about its mean
    return (s - s_mean) / M, jnp.full(M, 1.0 / M), jnp.ones(())


@partial(jax.jit, static_argnums=(0, 1))
def layer_forward(act: Activation, method: str, g, g_b, Ct, C_prev, z, ones):
    """C(l) = g <phi phi^T>_tilted + g_b o o^T (T9), o = ones in the original coordinates;
    returns (C, effective sample fraction)."""
    bias = g_b * jnp.outer(ones, ones)
    if method == "linear":
        C = symmetrize(g * jnp.linalg.solve(_linear_factor(g, C_prev, Ct), C_prev)) + bias
        return C, jnp.where(jnp.all(jnp.isfinite(C)), 1.0, jnp.nan)
    phi, _, _ = _samples(act, C_prev, z)
    second = gaussian_moments(act, "pp", C_prev)
    s = g * jnp.einsum("mp,pq,mq->m", phi, Ct, phi)
    a, _, ess = _weights(method, s, g * jnp.sum(Ct * second))
    tilt = (phi * a[:, None]).T @ phi - second * jnp.sum(a)  # control variate: exact <phi phi^T>
    return symmetrize(g * (second + tilt)) + bias, ess


@partial(jax.jit, static_argnums=(0, 1))
def layer_backward(act: Activation, method: str, g, A, C_prev, z):
    """C~(l-1) from A = C~(l) in the tilted measure at C(l-1) (T10); returns (C~, ESS fraction)."""
    if method == "linear":
        At = symmetrize(g * jnp.linalg.solve(_linear_factor(g, C_prev, A).T, A).T)
        return At, jnp.where(jnp.all(jnp.isfinite(At)), 1.0, jnp.nan)
    phi, d1, d2 = _samples(act, C_prev, z)
    second = gaussian_moments(act, "pp", C_prev)
    A_phi = phi @ A
    s = g * jnp.sum(phi * A_phi, axis=1)
    a, b, ess = _weights(method, s, g * jnp.sum(A * second))
    u = d1 * A_phi
    untilted = response(act, g, C_prev).vjp(A)  # closed-form control variate (T2)
    tilt = g * A * ((d1 * a[:, None]).T @ d1) + jnp.diag(g * jnp.sum(a[:, None] * d2 * A_phi, axis=0))
    return symmetrize(untilted * (1.0 - jnp.sum(a)) + tilt + 2.0 * g**2 * (u * b[:, None]).T @ u), ess


# --- one sweep and the fixed-point iteration ----------------------------------------------


@dataclass
class _Problem:
    """The equations on the training inputs, possibly in reduced coordinates (linear phi)."""

    spec: NetworkSpec
    method: str
    C0: jnp.ndarray
    Y: np.ndarray
    z: jnp.ndarray | None  # (L, M, P) common random numbers
    ones: jnp.ndarray  # the all-ones vector in these coordinates

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
        out[-1] = jnp.asarray(likelihood_gradient(np.asarray(kernels[-1]), self.Y, spec.kappa) / width)
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


def _anderson_solve(problem: _Problem, conj, width, *, rtol, atol, max_steps, damping, memory, min_health):
    """Damped Anderson iteration x <- F(x) on the stacked C~.

    Returns (x, converged, steps, residual, health).
    """
    shape = (problem.spec.depth,) + problem.C0.shape
    x = np.stack([np.asarray(c) for c in conj]).ravel()
    dx_hist, df_hist = [], []
    prev_x = prev_f = None
    residual, health = np.inf, np.ones(problem.spec.depth)
    for step in range(1, max_steps + 1):
        try:
            new, health = problem.sweep(list(jnp.asarray(x.reshape(shape))), width)
        except NotPositiveDefiniteError:  # the iterate left the PD cone: a failed solve, with advice
            return x, False, step, np.inf, np.full(problem.spec.depth, np.nan)
        if health.min() < min_health or not np.all(np.isfinite(health)):
            return x, False, step, residual, health
        fx = np.stack([np.asarray(c) for c in new]).ravel()
        f = fx - x
        if not np.all(np.isfinite(f)):
            return x, False, step, np.inf, health
        residual = np.linalg.norm(f) / max(np.linalg.norm(fx), 1e-300)
        if np.linalg.norm(f) <= rtol * np.linalg.norm(fx) + atol:
            return fx, True, step, residual, health
        if prev_x is not None:
            dx_hist.append(x - prev_x)
            df_hist.append(f - prev_f)
            dx_hist, df_hist = dx_hist[-memory:], df_hist[-memory:]
        prev_x, prev_f = x, f
        x_next = x + damping * f
        if dx_hist:
            dF = np.stack(df_hist, axis=1)
            gamma = np.linalg.lstsq(dF, f, rcond=None)[0]
            x_next = x_next - (np.stack(dx_hist, axis=1) + damping * dF) @ gamma
        x = x_next
    return x, False, max_steps, residual, health


def _schedule(width: int, widths) -> tuple:
    if widths is None:
        widths = (100 * width, 10 * width, 3 * width, width)
    widths = tuple(int(w) for w in widths)
    if not widths or widths[-1] != width or any(b > a for a, b in zip(widths, widths[1:], strict=False)):
        raise InputError(f"widths: a descending schedule ending at the target width {width}, got {widths}")
    return widths


def solve_map(
    spec: NetworkSpec,
    X,
    Y,
    X_test=None,
    method: str = "auto",
    *,
    widths=None,
    n_samples: int = 4096,
    key=0,
    rtol: float = 1e-8,
    atol: float = 1e-14,
    max_steps: int = 300,
    damping: float = 0.5,
    memory: int = 5,
    min_ess: float = 0.05,
    throw: bool = True,
) -> MAPResult:
    """MAP kernels of every layer from the forward-backward equations (T8-T12).

    Args:
      spec: network; X: (P, d); Y: (P,) or (P, D); X_test: optional (P_test, d).
      method: "auto" (linear if phi is linear, else importance sampling falling back to the
        second-cumulant approximation when the effective sample size collapses), "linear",
        "importance" or "cumulant".
      widths: annealing schedule, descending to spec.width (default 100N, 10N, 3N, N) (T12).
      n_samples: Monte Carlo samples per layer (common random numbers); key: their seed.
      rtol, atol: stop when |F(x) - x| <= rtol |F(x)| + atol on the stacked C~.
      max_steps: sweeps per stage; damping: step size of the mixing; memory: Anderson depth.
      min_ess: smallest acceptable effective sample fraction (importance sampling).
      throw: raise ConvergenceError on failure (default); otherwise return converged=False.

    Returns:
      MAPResult.

    Example:
      >>> res = solve_map(NetworkSpec(depth=3, width=200, g_w=1.5, g_b=0.1), X, Y, X_test)
      >>> res.converged, res.cka[-1]
    """
    options = dict(
        n_samples=n_samples,
        key=key,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        damping=damping,
        memory=memory,
        throw=throw,
    )  # for the ESS fallback
    if method not in METHODS:
        raise InputError(f"method: unknown {method!r}; choose one of {METHODS}")
    linear = spec.act.name == "linear" and spec.act.has_closed_form
    if method == "linear" and not linear:
        raise InputError(f"method: 'linear' needs the linear activation, not {spec.act.name}")
    chosen = "linear" if (method == "auto" and linear) else ("importance" if method == "auto" else method)
    X_all = check_inputs(X, X_test)
    P = np.shape(X)[0]
    Y = check_targets(Y, P, spec.n_out)
    schedule = _schedule(spec.width, widths)
    keys = jax.random.split(as_key(key), 2)
    C0_all = jnp.asarray(input_kernel(spec, X_all))
    z_all = jax.random.normal(keys[0], (spec.depth, n_samples, X_all.shape[0]))
    full = _Problem(spec, chosen, C0_all[:P, :P], Y, z_all[:, :, :P], jnp.ones(P))
    problem, basis = full, None
    if chosen == "linear":
        basis = _range_basis(X_all[:P])
        if basis.shape[1] < P:  # exact reduction to r = rank([X, 1]) coordinates
            B = jnp.asarray(basis)
            problem = _Problem(spec, chosen, B.T @ full.C0 @ B, basis.T @ Y, None, B.T @ full.ones)
    r = problem.C0.shape[0]

    conj = [jnp.zeros((r, r))] * spec.depth
    timings, n_iter, message = {}, 0, "converged"
    converged, residual, health = True, 0.0, np.ones(spec.depth)
    prev_width = schedule[0]
    for width in schedule:
        start = time.perf_counter()
        conj = [c * (prev_width / width) for c in conj]  # C~ scales as 1/N: predictor for the stage
        x, converged, steps, residual, health = _anderson_solve(
            problem,
            conj,
            width,
            rtol=rtol,
            atol=atol,
            max_steps=max_steps,
            damping=damping,
            memory=memory,
            min_health=min_ess if chosen == "importance" else 0.0,
        )
        n_iter += steps
        timings[f"N={width}"] = time.perf_counter() - start
        conj = list(jnp.asarray(x.reshape((spec.depth, r, r))))
        prev_width = width
        if converged:
            continue
        if chosen == "importance" and np.nanmin(np.append(health, np.inf)) < min_ess and method == "auto":
            fallback = solve_map(spec, X, Y, X_test, "cumulant", **{**options, "widths": schedule})
            note = f"importance sampling ESS fell to {health.min():.3f} at N={width}; "
            return _with_method(fallback, "cumulant (ESS fallback)", note + fallback.message)
        message = _failure_message(chosen, width, steps, residual, health, min_ess)
        if throw:
            raise ConvergenceError(message)
        break

    if chosen == "linear" and converged and not _normalisable(problem, conj):
        converged, message = False, _failure_message(chosen, schedule[-1], 0, residual, np.full(1, np.nan), 0)
        if throw:
            raise ConvergenceError(message)
    if problem is not full:  # back to the original coordinates: C = U S U^T, then T11 and T10 there
        B = jnp.asarray(basis)
        reduced, _ = problem.forward(conj)
        conj, _ = full.backward([full.C0] + [B @ S @ B.T for S in reduced[1:]], schedule[-1])
    # final forward pass on train + test inputs, C~ zero on test rows
    conj_all = [jnp.zeros(C0_all.shape).at[:P, :P].set(c) for c in conj]
    z_joint = jax.random.normal(keys[1], z_all.shape).at[:, :, :P].set(z_all[:, :, :P])
    kernels, _ = full.forward(conj_all, C0=C0_all, z=z_joint, ones=jnp.ones(len(C0_all)))
    kernels = np.asarray(jnp.stack(kernels))
    conj_kernels = np.concatenate([np.zeros((1,) + C0_all.shape), np.asarray(jnp.stack(conj_all))])
    predict = X_test is not None and converged  # an unconverged iterate may not be positive definite
    f_test = kernel_predict(kernels[-1], Y, spec.kappa) if predict else None
    ess = health if chosen == "importance" else np.ones(spec.depth)
    return MAPResult(
        kernels=kernels,
        conj_kernels=conj_kernels,
        nngp=nngp_kernels(spec, X, X_test),
        cka=cka_layers(kernels, Y),
        converged=bool(converged),
        n_iter=n_iter,
        residual=float(residual),
        ess=ess,
        method=chosen,
        widths=schedule,
        f_test=f_test,
        timings=timings,
        message=message,
    )


def _with_method(result: MAPResult, method: str, message: str) -> MAPResult:
    return MAPResult(**{**result.__dict__, "method": method, "message": message})


def _failure_message(method, width, steps, residual, health, min_ess) -> str:
    if np.isnan(health).any():
        return (
            f"MAP solve: an iterate lost positive definiteness at N={width} (sweep {steps}); "
            "add annealing stages (widths=...), lower damping, or increase the width or kappa"
        )
    if method == "importance" and health.min() < min_ess:
        return (
            f"MAP solve: importance-sampling ESS fell to {health.min():.3f} (< min_ess={min_ess}) at "
            f"N={width}; use method='cumulant', more n_samples, a larger width or kappa"
        )
    if method == "linear" and health.min() <= 0:
        return (
            f"MAP solve: the tilted Gaussian lost positive definiteness at N={width} "
            "(C'^-1 - 2g C~ not > 0); increase the width or kappa, or add annealing stages"
        )
    return (
        f"MAP solve did not converge at N={width}: relative residual {residual:.2e} after {steps} sweeps; "
        "increase max_steps, lower damping, add annealing stages (widths=...), or increase kappa"
    )
