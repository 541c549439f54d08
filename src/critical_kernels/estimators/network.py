"""The finite network of a NetworkSpec in whitened coordinates, its potential and kernels.

Parameters are theta = sigma * u with sigma the prior standard deviation of each weight and
bias (sqrt(g_l / fan_in), sqrt(g_b)), so the prior on u is N(0, I): an isotropic sampler in u is
preconditioned per layer, with steps proportional to sqrt(g_l / fan_in) in theta (THEORY 7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp

from ..spec import NetworkSpec


def empirical_kernel(spec: NetworkSpec, layer: int, h):
    """C(l) = g_l/N phi(h_l) phi(h_l)^T + g_b[l] 11^T (THEORY 1) of hidden layer `layer` (1..L) from its
    pre-activations h (P', N)."""
    phi = spec.act.fn(h)
    return spec.gains[layer - 1] / spec.width * phi @ phi.T + spec.bias_vars[layer]


def unpack_layer(u, offset: int, shape: tuple[int, int], w_std: float, b_std: float):
    """(W, b, next offset): the weights (a, b) and bias (b,) of one layer stored at u[offset:],
    whitened entries first, scaled by their prior standard deviations."""
    a, b = shape
    W = u[offset : offset + a * b].reshape(a, b) * w_std
    bias = u[offset + a * b : offset + a * b + b] * b_std
    return W, bias, offset + a * b + b


@dataclass(frozen=True)
class Network:
    """A finite MLP of `spec` on inputs of dimension `d`, as functions of the flat vector u."""

    spec: NetworkSpec
    d: int

    @property
    def shapes(self) -> list[tuple[tuple[int, int], float, float]]:
        """Per layer: (W shape, W prior std, b prior std), input layer first, readout last."""
        s, N = self.spec, self.spec.width
        out = [((self.d, N), math.sqrt(s.g_in / self.d), math.sqrt(s.bias_vars[0]))]
        out += [((N, N), math.sqrt(s.gains[l - 1] / N), math.sqrt(s.bias_vars[l])) for l in range(1, s.depth)]
        out.append(((N, s.n_out), math.sqrt(s.gains[-1] / N), math.sqrt(s.bias_vars[-1])))
        return out

    @property
    def dim(self) -> int:
        return sum(a * b + b for (a, b), _, _ in self.shapes)

    def _layers(self, u):
        offset = 0
        for shape, w_std, b_std in self.shapes:
            W, bias, offset = unpack_layer(u, offset, shape, w_std, b_std)
            yield W, bias

    def forward(self, u, X):
        """Pre-activations h(1..L) (each (P', N)) and outputs f (P', D)."""
        layers = list(self._layers(u))
        W, b = layers[0]
        h = [X @ W + b]
        for W, b in layers[1:-1]:
            h.append(self.spec.act.fn(h[-1]) @ W + b)
        W, b = layers[-1]
        return h, self.spec.act.fn(h[-1]) @ W + b

    def kernels(self, u, X):
        """Empirical kernels C(l) = g_l/N phi(h_l) phi(h_l)^T + g_b, l = 1..L, shape (L, P', P')."""
        h, _ = self.forward(u, X)
        return jnp.stack([empirical_kernel(self.spec, l, hl) for l, hl in enumerate(h, start=1)])

    def log_density(self, u, X, Y, prior: bool = False):
        """-U(u): Gaussian likelihood N(Y; f, kappa) (unless prior) and the N(0, I) prior on u.

        X holds the training rows first (any test rows after them are ignored); Y (P, D)."""
        log_prior = -0.5 * jnp.sum(u * u)
        if prior:
            return log_prior
        _, f = self.forward(u, X[: Y.shape[0]])
        return log_prior - 0.5 / self.spec.kappa * jnp.sum((Y - f) ** 2)

    def test_outputs(self, u, X, Y):
        """The network's outputs f (P_test, D) on the rows of X after the P = len(Y) training rows."""
        return self.forward(u, X[Y.shape[0] :])[1]

    def test_predictive(self, u, X, Y):
        """Mean and variance of the output f* given every weight: (f, 0), each (P_test, D)."""
        f = self.test_outputs(u, X, Y)
        return f, jnp.zeros_like(f)
