"""NetworkSpec: the architecture and prior of a deep Bayesian network (THEORY section 1)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .activations import Activation, get_activation
from .errors import SpecError


def _per_layer(name: str, value: Any, length: int, *, allow_zero: bool) -> tuple[float, ...]:
    """Broadcast a scalar or validate a sequence of variances of the given length."""
    if np.ndim(value) == 0:
        values = (value,) * length
    else:
        values = tuple(np.asarray(value, dtype=object).ravel())
        if len(values) != length:
            raise SpecError(f"{name}: expected a scalar or {length} values, got {len(values)}")
    out = []
    for v in values:
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise SpecError(f"{name}: variances must be numbers, got {v!r}") from None
        if not math.isfinite(v):
            raise SpecError(f"{name}: variances must be finite, got {v}")
        if v < 0 or (v == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise SpecError(f"{name}: variances must be {bound}, got {v}")
        out.append(v)
    return tuple(out)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise SpecError(f"{name}: must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class NetworkSpec:
    """Fully connected network with L hidden layers of width N and Gaussian priors.

    Layers h1 = W0 x + b0, h(l+1) = Wl phi(hl) + bl, f = WL phi(hL) + bL with
    W0 ~ N(0, g_in/d), Wl ~ N(0, g_w[l]/N), b ~ N(0, g_b[l]) and y ~ N(f, kappa).

    Args:
      depth: L, the number of hidden layers (>= 1).
      width: N, the width of every hidden layer.
      activation: name ("erf", "relu", "linear", "tanh", "gelu"), an Activation, or a callable.
      g_in: input weight variance g0 (scaled by 1/d).
      g_w: weight variance g_l of layers l = 1..L: scalar or L values.
      g_b: bias variance of b0..bL: scalar or L+1 values (0 means no biases).
      kappa: observation noise variance (ridge) > 0.
      n_out: D, the number of outputs.
      quad_degree: quadrature nodes per dimension for activations without closed forms.

    Example:
      >>> spec = NetworkSpec(depth=3, width=200, activation="erf", g_w=1.5, g_b=0.1)
      >>> spec.gains, spec.bias_vars  # per layer: g_w of layers 1..3, g_b of the biases b0..b3
      ((1.5, 1.5, 1.5), (0.1, 0.1, 0.1, 0.1))
    """

    depth: int
    width: int = 100
    activation: Any = "erf"
    g_in: float = 1.0
    g_w: Any = 1.0
    g_b: Any = 0.0
    kappa: float = 0.01
    n_out: int = 1
    quad_degree: int = 80
    act: Activation = field(init=False, repr=False, compare=False)
    gains: tuple[float, ...] = field(init=False, repr=False, compare=False)
    bias_vars: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        depth = _positive_int("depth", self.depth)
        _positive_int("width", self.width)
        _positive_int("n_out", self.n_out)
        _positive_int("quad_degree", self.quad_degree)
        act = get_activation(self.activation, quad_degree=self.quad_degree)
        _per_layer("g_in", self.g_in, 1, allow_zero=False)
        kappa = float(self.kappa) if np.ndim(self.kappa) == 0 else math.nan
        if not (math.isfinite(kappa) and kappa > 0):
            raise SpecError(f"kappa: the noise variance must be a finite number > 0, got {self.kappa!r}")
        for name in ("g_w", "g_b"):  # per-layer values as tuples: the spec stays hashable
            if np.ndim(getattr(self, name)) > 0:
                object.__setattr__(self, name, tuple(float(v) for v in np.ravel(getattr(self, name))))
        object.__setattr__(self, "act", act)
        object.__setattr__(self, "gains", _per_layer("g_w", self.g_w, depth, allow_zero=False))
        object.__setattr__(self, "bias_vars", _per_layer("g_b", self.g_b, depth + 1, allow_zero=True))

    def replace(self, **changes: Any) -> NetworkSpec:
        """A copy with some fields changed (validated again)."""
        fields: dict[str, Any] = dict(
            depth=self.depth,
            width=self.width,
            activation=self.activation,
            g_in=self.g_in,
            g_w=self.g_w,
            g_b=self.g_b,
            kappa=self.kappa,
            n_out=self.n_out,
            quad_degree=self.quad_degree,
        )
        fields.update(changes)
        return NetworkSpec(**fields)
