"""Activations and their Gaussian pair expectations (T1, T2).

For a pair h = (h_a, h_b) ~ N(0, [[q_a, c], [c, q_b]]) an activation provides three moments:

  "pp"  : <phi(h_a)   phi(h_b)>    the NNGP map (T1)
  "dd"  : <phi'(h_a)  phi'(h_b)>   the response function (T2)
  "d2p" : <phi''(h_a) phi(h_b)>    the diagonal part of the response function (T2)

erf, relu and linear have closed forms; every other activation (tanh, gelu, user callables)
uses 2-D quadrature of configurable degree (nodes per dimension): by default the trapezoid
rule on [-9, 9] against the Gaussian weight, which converges exponentially for integrands
analytic in a strip (tanh has poles at +-i pi/2, where Gauss-Hermite converges slowly: at q = 1
and 64 nodes 2e-7 against 5e-11 for the trapezoid rule); Gauss-Hermite is available as
quad_rule="hermite".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf as _erf

from .errors import SpecError
from .numerics import arccos, arcsin, clip_corr

MOMENTS = ("pp", "dd", "d2p")
_SQRT_2PI = math.sqrt(2.0 * math.pi)


def _safe_corr(qa, qb, c):
    """rho = c / sqrt(qa qb) clipped to [-1, 1]; 0 where a variance vanishes."""
    denom = jnp.sqrt(qa * qb)
    ok = denom > 0
    return jnp.where(ok, clip_corr(c / jnp.where(ok, denom, 1.0)), 0.0)


# --- closed forms -------------------------------------------------------------------------


def _erf_pair(kind, qa, qb, c):
    ua, ub = 1.0 + 2.0 * qa, 1.0 + 2.0 * qb
    if kind == "pp":  # (2/pi) arcsin(2c / sqrt((1+2qa)(1+2qb)))
        u = 2.0 * c * jax.lax.rsqrt(ua) * jax.lax.rsqrt(ub)
        return (2.0 / math.pi) * arcsin(clip_corr(u))
    det = ua * ub - 4.0 * c * c  # det(I + 2 C_pair)
    if kind == "dd":  # (4/pi) det(I + 2C)^(-1/2)
        return (4.0 / math.pi) / jnp.sqrt(det)
    return -(8.0 / math.pi) * c / (ua * jnp.sqrt(det))  # d2p = 2 d(pp)/d(qa)


def _relu_pair(kind, qa, qb, c):
    rho = _safe_corr(qa, qb, c)
    theta = arccos(rho)
    if kind == "pp":  # arc-cosine kernel of degree 1
        scale = jnp.sqrt(qa * qb) / (2.0 * math.pi)
        return scale * (jnp.sqrt(1.0 - rho**2) + (math.pi - theta) * rho)
    if kind == "dd":  # P(h_a > 0, h_b > 0)
        return (math.pi - theta) / (2.0 * math.pi)
    # d2p: <delta(h_a) relu(h_b)> = sqrt(qb (1 - rho^2) / qa) / (2 pi)
    return jnp.where(qa > 0, jnp.sqrt(qb * (1.0 - rho**2) / jnp.where(qa > 0, qa, 1.0)), 0.0) / (
        2.0 * math.pi
    )


def _relu_self(kind, q):
    return {"pp": 0.5 * q, "dd": 0.5 + 0.0 * q, "d2p": 0.0 * q}[kind]


def _linear_pair(kind, qa, qb, c):
    return {"pp": c + 0.0 * qa, "dd": 1.0 + 0.0 * c, "d2p": 0.0 * c}[kind]


# --- quadrature ---------------------------------------------------------------------------


QUAD_RULES = ("trapezoid", "hermite")


@lru_cache(maxsize=32)
def quadrature_rule(degree: int, rule: str = "trapezoid") -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights for <f(z)>, z ~ N(0, 1), with `degree` nodes; weights sum to ~1."""
    if rule == "hermite":  # probabilists' Gauss-Hermite
        nodes, weights = np.polynomial.hermite_e.hermegauss(degree)
        return nodes, weights / _SQRT_2PI
    if rule == "trapezoid":  # the Gaussian tail beyond 9 is 2e-19
        nodes = np.linspace(-9.0, 9.0, degree)
        return nodes, (nodes[1] - nodes[0]) * np.exp(-0.5 * nodes**2) / _SQRT_2PI
    raise ValueError(f"quad_rule: unknown {rule!r}; choose one of {QUAD_RULES}")


@dataclass(frozen=True, eq=False)
class Activation:
    """An elementwise activation phi with its Gaussian pair moments.

    Attributes:
      name: label used in reports.
      fn, d1, d2: phi, phi', phi'' (elementwise, JAX-traceable).
      quad_degree: quadrature nodes per dimension when there is no closed form.
      quad_rule: "trapezoid" (default) or "hermite".
      closed_pair: closed-form pair moments (kind, qa, qb, c) -> array, or None.
      closed_self: closed-form moments of a single variable (kind, q) -> array, or None.
      smooth_diagonal: the closed pair formula is exact and differentiable at rho = 1.
      source: the name or callable it was built from (what pickling stores).
    """

    name: str
    fn: Callable
    d1: Callable
    d2: Callable
    quad_degree: int = 80
    quad_rule: str = "trapezoid"
    closed_pair: Callable | None = None
    closed_self: Callable | None = None
    smooth_diagonal: bool = False
    source: Any = None

    def __reduce__(self):
        """Pickle as the recipe (name or callable, quadrature), rebuilt through the cache."""
        if self.source is None:
            raise TypeError(f"activation {self.name!r}: build it with get_activation to pickle it")
        return (get_activation, (self.source, self.quad_degree, self.quad_rule))

    @property
    def has_closed_form(self) -> bool:
        return self.closed_pair is not None

    @property
    def is_linear(self) -> bool:
        """phi(h) = h with its closed forms: Gaussian tilted measures (T9-T10), exact posteriors (T18)."""
        return self.name == "linear" and self.has_closed_form

    def _factors(self, kind):
        return {"pp": (self.fn, self.fn), "dd": (self.d1, self.d1), "d2p": (self.d2, self.fn)}[kind]

    def pair_moment(self, kind: str, qa, qb, c, *, quadrature: bool = False):
        """<f(h_a) g(h_b)> for the pair covariance [[qa, c], [c, qb]], broadcast elementwise."""
        if kind not in MOMENTS:
            raise ValueError(f"unknown moment {kind!r}; choose one of {MOMENTS}")
        if self.closed_pair is not None and not quadrature:
            return self.closed_pair(kind, qa, qb, c)
        return self._quad_pair(kind, qa, qb, c)

    def self_moment(self, kind: str, q, *, quadrature: bool = False):
        """<f(h) g(h)> for a single h ~ N(0, q) (the diagonal of a kernel)."""
        if kind not in MOMENTS:
            raise ValueError(f"unknown moment {kind!r}; choose one of {MOMENTS}")
        if not quadrature:
            if self.closed_self is not None:
                return self.closed_self(kind, q)
            if self.closed_pair is not None:
                return self.closed_pair(kind, q, q, q)
        f, g = self._factors(kind)
        nodes, weights = quadrature_rule(self.quad_degree, self.quad_rule)
        h = jnp.sqrt(jnp.asarray(q))[..., None] * nodes
        return (f(h) * g(h)) @ weights

    def _quad_pair(self, kind, qa, qb, c):
        # h_a = sqrt(qa) z1, h_b = sqrt(qb) (rho z1 + sqrt(1 - rho^2) z2): n^2 nodes per entry.
        f, g = self._factors(kind)
        nodes, weights = quadrature_rule(self.quad_degree, self.quad_rule)
        qa, qb, c = jnp.broadcast_arrays(*(jnp.asarray(v, dtype=jnp.float64) for v in (qa, qb, c)))
        shape = qa.shape
        rows = jnp.stack([qa.ravel(), qb.ravel(), c.ravel()], axis=1)

        def one(row):
            a, b, cc = row[0], row[1], row[2]
            rho = _safe_corr(a, b, cc)
            perp = jnp.sqrt(jnp.maximum(1.0 - rho**2, 0.0))
            inner = g(jnp.sqrt(b) * (rho * nodes[:, None] + perp * nodes[None, :])) @ weights
            return weights @ (f(jnp.sqrt(a) * nodes) * inner)

        batch = max(1, min(rows.shape[0], 2**22 // self.quad_degree**2))
        return jax.lax.map(one, rows, batch_size=batch).reshape(shape)


def gaussian_moments(act: Activation, kind: str, C):
    """Matrix M_ab = <f(h_a) g(h_b)>, h ~ N(0, C), of the moment `kind` (T1, T2).

    Unless the pair formula is smooth there, the diagonal uses the single-variable moment and
    the pair formula never sees the diagonal (double-where), so autodiff stays finite at rho = 1.
    """
    q = jnp.diagonal(C)
    if act.smooth_diagonal:
        return act.pair_moment(kind, q[:, None], q[None, :], C)
    eye = jnp.eye(C.shape[-1], dtype=bool)
    off = act.pair_moment(kind, q[:, None], q[None, :], jnp.where(eye, 0.0, C))
    return jnp.where(eye, jnp.diag(act.self_moment(kind, q)), off)


# --- registry -----------------------------------------------------------------------------


def _erf_d1(x):
    return (2.0 / math.sqrt(math.pi)) * jnp.exp(-x * x)


def _gauss_pdf(x):
    return jnp.exp(-0.5 * x * x) / _SQRT_2PI


def _gauss_cdf(x):
    return 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))


def _tanh_d1(x):
    return 1.0 - jnp.tanh(x) ** 2


def _erf_d2(x):
    return -2.0 * x * _erf_d1(x)


def _relu(x):
    return jnp.maximum(x, 0.0)


def _relu_d1(x):
    return (x > 0).astype(x.dtype)


def _zero(x):
    return 0.0 * x


def _identity(x):
    return x


def _one(x):
    return 1.0 + 0.0 * x


def _tanh_d2(x):
    return -2.0 * jnp.tanh(x) * _tanh_d1(x)


def _gelu(x):
    return x * _gauss_cdf(x)


def _gelu_d1(x):
    return _gauss_cdf(x) + x * _gauss_pdf(x)


def _gelu_d2(x):
    return (2.0 - x * x) * _gauss_pdf(x)


# module-level functions only, so that activations (and specs) pickle
_BUILTINS = {
    "erf": dict(fn=_erf, d1=_erf_d1, d2=_erf_d2, closed_pair=_erf_pair, smooth_diagonal=True),
    # relu'' is a delta function: its moment exists only in closed form
    "relu": dict(fn=_relu, d1=_relu_d1, d2=_zero, closed_pair=_relu_pair, closed_self=_relu_self),
    "linear": dict(fn=_identity, d1=_one, d2=_zero, closed_pair=_linear_pair, smooth_diagonal=True),
    "tanh": dict(fn=jnp.tanh, d1=_tanh_d1, d2=_tanh_d2),
    "gelu": dict(fn=_gelu, d1=_gelu_d1, d2=_gelu_d2),
}


def _builtin(name: str, quad_degree: int, quad_rule: str) -> Activation:
    return Activation(name=name, quad_degree=quad_degree, quad_rule=quad_rule, source=name, **_BUILTINS[name])


BUILTIN_ACTIVATIONS = ("erf", "relu", "linear", "tanh", "gelu")


@lru_cache(maxsize=128)
def _cached(key, quad_degree: int, quad_rule: str) -> Activation:
    if isinstance(key, str):
        return _builtin(key, quad_degree, quad_rule)
    fn = key
    d1 = jax.grad(lambda x: jnp.sum(fn(x)))  # elementwise phi' of an elementwise phi
    d2 = jax.grad(lambda x: jnp.sum(d1(x)))
    name = getattr(fn, "__name__", "custom")
    return Activation(name=name, fn=fn, d1=d1, d2=d2, quad_degree=quad_degree, quad_rule=quad_rule, source=fn)


def get_activation(activation, quad_degree: int = 80, quad_rule: str = "trapezoid") -> Activation:
    """An Activation from a name, an Activation, or an elementwise callable (quadrature)."""
    if quad_rule not in QUAD_RULES:
        raise SpecError(f"quad_rule: unknown {quad_rule!r}; choose one of {QUAD_RULES}")
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        name = activation.lower()
        if name not in BUILTIN_ACTIVATIONS:
            raise SpecError(
                f"activation: unknown {activation!r}; choose one of "
                f"{', '.join(BUILTIN_ACTIVATIONS)} or pass a callable"
            )
        return _cached(name, quad_degree, quad_rule)
    if callable(activation):
        _check_traceable(activation)
        return _cached(activation, quad_degree, quad_rule)
    raise SpecError(f"activation: expected a name or a callable, got {type(activation).__name__}")


def _check_traceable(fn: Callable) -> None:
    """A callable activation must be elementwise and written with jax.numpy (its moments and
    derivatives are traced): tried on an abstract (3,) array, without computing anything."""
    name = getattr(fn, "__name__", type(fn).__name__)
    try:
        out = jax.eval_shape(fn, jax.ShapeDtypeStruct((3,), jnp.float64))
    except Exception as err:  # any failure to trace: NumPy or math functions, wrong signature
        raise SpecError(
            f"activation: the callable {name!r} cannot be traced by JAX ({type(err).__name__}); write "
            "it with jax.numpy (e.g. jnp.tanh, not np.tanh or math.tanh)"
        ) from None
    if getattr(out, "shape", None) != (3,):
        raise SpecError(f"activation: the callable {name!r} must act elementwise ((3,) -> (3,)), got {out}")
