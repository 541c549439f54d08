"""The pre-activation (function-space) parameterisation of a finite network (THEORY T19).

Given the layer below, the pre-activations of layer l on the P' = train + test inputs are i.i.d.
over neurons, h_i(l) ~ N(0, C_emp(l-1)) with C_emp(0) = C0: the weights of that layer are integrated
out exactly. Non-centred, h(l) = chol(C_emp(l-1)) z(l) with z ~ N(0, I) (P' x N). The readout is
integrated out too, so in the flat vector u of all parameters (prior N(0, I))

    ln p(u | Y) = -|u|^2 / 2 + ln N(Y; 0, C_emp(L)_tr,tr + kappa I) + const      (T19, T8).

C_emp(l-1) has rank <= fan_in + 1, so on P' > fan_in rows it is singular, and there the pre-activation
block (P' x N) is also larger than the weight block (fan_in x N + N). Each layer therefore picks its
own form: pre-activations when P' <= fan_in, whitened weights and bias as in Network otherwise (on
MNIST, d = 784, layer 1 takes pre-activations for any P' <= 784). For linear phi the rank of C_emp(l-1)
is also capped by every fan-in below, so there the rule uses the smallest fan-in up to layer l.
No jitter is added: with P' <= fan_in, C_emp(l-1) is positive definite with probability one unless
two inputs coincide (or phi maps two rows onto +-each other, e.g. x and -x with an odd phi and no
biases); then the log density is not finite and sample_posterior refuses to start, saying so.

Training rows come first. With a lower Cholesky factor the training rows of h(l) depend only on the
training block of C_emp(l-1) and the training rows of z(l), so the likelihood never sees the test
rows of z, which keep their N(0, I) law: the test pre-activations are extra rows of the same draws,
with their exact conditional law given the training rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from .. import linalg
from ..likelihood import log_evidence, predictive_moments
from ..spec import NetworkSpec
from .network import Network, empirical_kernel


def input_rank(spec: NetworkSpec, X_all) -> int:
    """The numerical rank of C0 = g_in/d X X^T + g_b[0] 11^T on the P' rows X_all (at most d + 1): below
    P' the input kernel is singular (e.g. MNIST's always-blank pixels make rank X < 784), and layer 1 must
    keep its weights."""
    X_all = np.asarray(X_all, dtype=float)
    factor = np.hstack([X_all, np.full((len(X_all), 1), 1.0 if spec.bias_vars[0] > 0 else 0.0)])
    return int(np.linalg.matrix_rank(factor))


@dataclass(frozen=True)
class Preactivation:
    """The network of `spec` on `n_rows` = P' inputs of dimension `d` as functions of the flat vector
    u (per layer: z (P', N) in pre-activation form, or whitened W (fan_in, N) and b (N,)); the same
    methods as Network that the samplers use (dim, kernels, log_density, test_predictive)."""

    spec: NetworkSpec
    d: int
    n_rows: int
    input_rank: int | None = None  # rank of C0 (`input_rank`); None: d, i.e. C0 of full rank on P' <= d

    @property
    def preactivation_layers(self) -> tuple[bool, ...]:
        """Per hidden layer 1..L: True where the layer is parameterised by its pre-activations (C_emp(l-1)
        can be positive definite on the P' rows: P' <= the rank its fan-in allows)."""
        s = self.spec
        first = self.d if self.input_rank is None else self.input_rank
        fan_ins = np.array([first] + [s.width] * (s.depth - 1))
        if s.act.name == "linear":  # rank C_emp(l-1) <= min(fan_in(1..l)) + biases
            fan_ins = np.minimum.accumulate(fan_ins)
        return tuple(bool(self.n_rows <= f) for f in fan_ins)

    @property
    def sizes(self) -> list[int]:
        """Number of parameters of each hidden layer (the readout has none: it is integrated out)."""
        hidden = Network(self.spec, self.d).shapes[:-1]
        return [
            self.n_rows * b if pre else a * b + b
            for pre, ((a, b), _, _) in zip(self.preactivation_layers, hidden, strict=True)
        ]

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    def blocks(self, u) -> list:
        """u split into one block V (k, N) per hidden layer, column i holding neuron i's coordinates:
        z (P', N) for a pre-activation layer, the whitened [W; b] (fan_in + 1, N) otherwise."""
        s, out, offset = self.spec, [], 0
        for pre, size in zip(self.preactivation_layers, self.sizes, strict=True):
            k = size // s.width
            part = u[offset : offset + size]
            if pre:
                out.append(part.reshape(k, s.width))
            else:  # whitened W (fan_in, N) row-major, then b (N,)  (unpack_layer's layout)
                out.append(
                    jnp.concatenate([part[: size - s.width].reshape(k - 1, s.width), part[None, -s.width :]])
                )
            offset += size
        return out

    def pack(self, blocks) -> jnp.ndarray:
        """The flat u of per-layer blocks (the inverse of `blocks`)."""
        parts = [
            V.ravel() if pre else jnp.concatenate([V[:-1].ravel(), V[-1]])
            for pre, V in zip(self.preactivation_layers, blocks, strict=True)
        ]
        return jnp.concatenate(parts)

    def layer_map(self, layer: int, C_below, h_below, X):
        """M (P', k) with h(layer) = M V for that layer's block V: chol(C_emp(layer-1)) for a
        pre-activation layer, [phi(h(layer-1)) sigma_w, sigma_b 1] (X instead of phi(h) in layer 1)
        otherwise."""
        if self.preactivation_layers[layer - 1]:
            return linalg.cholesky(C_below)
        _, w_std, b_std = Network(self.spec, self.d).shapes[layer - 1]
        below = X if layer == 1 else self.spec.act.fn(h_below)
        return jnp.concatenate([w_std * below, jnp.full((below.shape[0], 1), b_std)], axis=1)

    def input_kernel(self, X):
        """C0 = g_in/d X X^T + g_b[0] on the P' rows of X (as nngp.input_kernel, traceable)."""
        return self.spec.g_in / X.shape[1] * X @ X.T + self.spec.bias_vars[0]

    def forward(self, u, X) -> tuple[list, list]:
        """(C_emp(0..L), h(1..L)) on the P' rows of X: C0 as nngp.input_kernel, then layer by layer (T19)."""
        s = self.spec
        C, h = [self.input_kernel(X)], []
        for l, V in enumerate(self.blocks(u), start=1):
            h.append(self.layer_map(l, C[-1], h[-1] if h else None, X) @ V)
            C.append(empirical_kernel(s, l, h[-1]))
        return C, h

    def _kernels(self, u, X) -> list:
        return self.forward(u, X)[0]

    def kernels(self, u, X):
        """Empirical kernels C_emp(l), l = 1..L, on all P' rows, shape (L, P', P')."""
        return jnp.stack(self._kernels(u, X)[1:])

    def log_density(self, u, X, Y, prior: bool = False):
        """-|u|^2/2 + ln N(Y; 0, C_emp(L)_tr,tr + kappa I) (T19; the likelihood off if prior).

        X: all P' rows, training rows first; Y: (P, D) targets of the first P rows."""
        log_prior = -0.5 * jnp.sum(u * u)
        if prior:
            return log_prior
        P = Y.shape[0]
        return log_prior + log_evidence(self._kernels(u, X)[-1][:P, :P], Y, self.spec.kappa)

    def test_outputs(self, u, X, Y):
        """E[f_test | hidden layers, Y] = C(L)_te,tr (C(L)_tr,tr + kappa I)^-1 Y (THEORY 4), (P_test, D)."""
        return self.test_predictive(u, X, Y)[0]

    def test_predictive(self, u, X, Y):
        """Mean and variance of the output f* given the hidden layers, the readout integrated out
        (T21): C_te,tr K^-1 Y and diag(C_te,te - C_te,tr K^-1 C_tr,te), K = C_tr,tr + kappa I, each
        (P_test, D)."""
        m, second = predictive_moments(self._kernels(u, X)[-1], Y, self.spec.kappa)
        return m, second - m**2
