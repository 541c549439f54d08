"""Mean-field criticality: fixed points q*, c*, slopes chi_1, chi_c, depth scales, g_c.

For one layer map (T1) on the diagonal, q -> g <phi^2>_q + g_b, and on the correlation at
fixed q*, c -> g <phi_a phi_b>_{q*, c} + g_b. The edge of chaos is chi_1 = g <phi'^2>_{q*} = 1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import jax
import numpy as np
from scipy.optimize import brentq

from .activations import Activation, get_activation
from .errors import CriticalKernelsError, SpecError

_Q_GRID = np.logspace(-12, 8, 401)  # where the diagonal fixed point is searched
_ROOT_TOL = 1e-14


@lru_cache(maxsize=64)
def _self_moment_fn(act: Activation, kind: str):
    return jax.jit(lambda q: act.self_moment(kind, q))


@lru_cache(maxsize=64)
def _pair_moment_fn(act: Activation, kind: str):
    return jax.jit(lambda q, c: act.pair_moment(kind, q, q, c))


def _float(x) -> float:
    return float(np.asarray(x))


def _check_variance(name: str, value: float, positive: bool) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise SpecError(f"{name}: must be a finite number {'> 0' if positive else '>= 0'}, got {value}")
    return value


def _root(f, a, b, xtol, rtol: float = 8.9e-16) -> float:
    """The root of f in [a, b] by Brent's method (scipy's brentq, its default rtol), as a float."""
    return float(brentq(f, float(a), float(b), xtol=float(xtol), rtol=rtol))  # pyright: ignore[reportArgumentType]


def fixed_point_q(act: Activation, g: float, g_b: float) -> float:
    """Stable fixed point q* of q -> g <phi^2>_q + g_b (first downward crossing); inf if it diverges."""
    pp = _self_moment_fn(act, "pp")
    excess = lambda q: g * _float(pp(q)) + g_b - q  # noqa: E731
    values = g * np.asarray(pp(_Q_GRID)) + g_b - _Q_GRID
    if values[0] <= 0:
        return _root(excess, 0.0, _Q_GRID[0], xtol=1e-300) if g_b > 0 else 0.0
    down = np.nonzero(values[:-1] * values[1:] <= 0)[0]
    if down.size == 0:
        return math.inf
    k = down[0]
    return _root(excess, _Q_GRID[k], _Q_GRID[k + 1], xtol=_ROOT_TOL * _Q_GRID[k], rtol=1e-15)


def chi_1(act: Activation, g: float, g_b: float) -> float:
    """chi_1 = g <phi'(h)^2>, h ~ N(0, q*): the slope of the map at the diagonal fixed point."""
    q = min(fixed_point_q(act, g, g_b), _Q_GRID[-1])
    return g * _float(_self_moment_fn(act, "dd")(q))


def _fixed_point_c(act: Activation, g: float, g_b: float, q: float, chi1: float) -> float:
    """Stable fixed point c* of the off-diagonal map at fixed q* (c* = q* in the ordered phase)."""
    if chi1 <= 1.0 + 1e-9 or q == 0.0:
        return q
    pp = _pair_moment_fn(act, "pp")
    grid = np.linspace(-q, q * (1.0 - 1e-6), 2001)
    values = g * np.asarray(pp(q, grid)) + g_b - grid
    down = np.nonzero((values[:-1] > 0) & (values[1:] <= 0))[0]
    if down.size == 0:
        return q
    k = down[-1]
    excess = lambda c: g * _float(pp(q, c)) + g_b - c  # noqa: E731
    return _root(excess, grid[k], grid[k + 1], xtol=_ROOT_TOL * q)


def critical_gain(activation, g_b: float = 0.0, *, quad_degree: int = 80) -> float:
    """The weight variance g_c on the edge of chaos, chi_1(g_c) = 1, by root finding.

    With g_b = 0 and phi(0) = phi''(0) = 0, q* = 0 is a fixed point for every g and loses stability at
    g_c = 1 / phi'(0)^2 exactly (erf: pi/4); chi_1 - 1 is quadratic on the chaotic side there, so
    this value is returned instead of a root. Otherwise chi_1(g) - 1 is bracketed by doubling g.

    Example:
      >>> import math
      >>> math.isclose(critical_gain("erf", 0.0), math.pi / 4)  # 1 / phi'(0)^2, phi'(0) = 2 / sqrt(pi)
      True
    """
    act = get_activation(activation, quad_degree)
    g_b = _check_variance("g_b", g_b, positive=False)
    if g_b == 0 and _float(act.fn(0.0)) == 0 and _float(act.d2(0.0)) == 0:
        return 1.0 / _float(_self_moment_fn(act, "dd")(0.0))
    gap = lambda g: chi_1(act, g, g_b) - 1.0  # noqa: E731
    lo, hi = 1e-3, 1.0
    while gap(hi) < 0:
        lo, hi = hi, 2.0 * hi
        if hi > 1e4:
            raise CriticalKernelsError(
                f"critical_gain: chi_1 < 1 for every g_w up to 1e4 ({act.name}, g_b={g_b}); "
                "this activation has no edge of chaos"
            )
    if gap(lo) > 0:
        raise CriticalKernelsError(f"critical_gain: chi_1 > 1 already at g_w = {lo} ({act.name}, g_b={g_b})")
    return _root(gap, lo, hi, xtol=1e-13, rtol=1e-15)


@dataclass(frozen=True)
class CriticalPoint:
    """Mean-field state of a deep network's layer map at weight variance g_w.

    q_star, c_star, rho_star: diagonal and off-diagonal fixed points, rho* = c*/q*.
    chi_1: g <phi'^2> at q* (edge of chaos at 1); chi_c: slope of the correlation map at c*;
    chi_q: slope of the diagonal map at q*; xi_q, xi_c: depth scales -1/ln chi (inf at chi >= 1).
    g_c: critical weight variance at this g_b; phase: "ordered", "critical" or "chaotic".
    """

    activation: str
    g_w: float
    g_b: float
    g_c: float
    q_star: float
    c_star: float
    rho_star: float
    chi_1: float
    chi_c: float
    chi_q: float
    xi_q: float
    xi_c: float
    phase: str

    def as_dict(self) -> dict:
        return asdict(self)


def _depth_scale(chi: float) -> float:
    return -1.0 / math.log(chi) if 0 < chi < 1.0 - 1e-12 else math.inf


def criticality(
    activation, g_b: float = 0.0, g_w: float | None = None, *, quad_degree: int = 80
) -> CriticalPoint:
    """Fixed points, slopes and depth scales at g_w (default: at the edge of chaos g_c).

    Args:
      activation: name, Activation or callable.
      g_b: bias variance (>= 0).
      g_w: weight variance (> 0); None evaluates at g_c.

    Returns:
      CriticalPoint.

    Example:
      >>> point = criticality("erf", g_b=0.1)
      >>> round(point.g_c, 3), round(point.chi_1, 12)  # on the edge of chaos chi_1 = 1
      (1.552, 1.0)
    """
    act = get_activation(activation, quad_degree)
    g_b = _check_variance("g_b", g_b, positive=False)
    g_c = critical_gain(act, g_b)
    g = g_c if g_w is None else _check_variance("g_w", g_w, positive=True)
    q = fixed_point_q(act, g, g_b)
    q_eval = min(q, _Q_GRID[-1])
    chi1 = g * _float(_self_moment_fn(act, "dd")(q_eval))
    chi_q = g * (chi1 / g + _float(_self_moment_fn(act, "d2p")(q_eval)))
    c = _fixed_point_c(act, g, g_b, q_eval, chi1) if math.isfinite(q) else q
    chi_c = g * _float(_pair_moment_fn(act, "dd")(q_eval, c)) if c < q else chi1
    phase = "critical" if abs(chi1 - 1.0) < 1e-9 else ("chaotic" if chi1 > 1 else "ordered")
    return CriticalPoint(
        activation=act.name,
        g_w=g,
        g_b=g_b,
        g_c=g_c,
        q_star=q,
        c_star=c,
        rho_star=c / q if 0 < q < math.inf else 1.0,
        chi_1=chi1,
        chi_c=chi_c,
        chi_q=chi_q,
        xi_q=_depth_scale(chi_q),
        xi_c=_depth_scale(chi_c),
        phase=phase,
    )
