"""Finite width: kernel fluctuations of the prior (T5-T7) and random finite networks.

The contraction V[A] (T5) is estimated by Monte Carlo with common random numbers (one fixed
set of standard normals per layer) and the exact means <phi phi^T> as control variates; it is
exact for linear phi. Dense P^2 x P^2 tensors exist only behind `KernelCovariance.dense`.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .activations import gaussian_moments
from .errors import InputError
from .nngp import Response, input_kernel, layer_responses, mu, nngp_stack
from .numerics import as_key, check_inputs, limit_blas_threads, psd_sqrt, standard_error
from .spec import NetworkSpec


@jax.jit
def v_contract(g, phi, second, A):
    """V[A] = g^2 (<phi phi^T phi^T A phi> - <phi phi^T><phi^T A phi>) (T5), by Monte Carlo.

    Args:
      g: weight variance of the layer.
      phi: (M, P) activations phi(h_m), h_m ~ N(0, C_prev) (common random numbers).
      second: (P, P) exact <phi phi^T> at C_prev, subtracted as a control variate.
      A: symmetric (P, P).

    The sample covariance of phi phi^T and phi^T A phi about their exact means, O(M P^2).
    """
    s = jnp.einsum("mp,pq,mq->m", phi, A, phi) - jnp.sum(A * second)
    return g**2 * ((phi * s[:, None]).T @ phi / phi.shape[0] - second * jnp.mean(s))


def v_contract_linear(g, C_prev, A):
    """V[A] = 2 g^2 C A C: exact for linear phi (T5)."""
    return 2.0 * g**2 * C_prev @ A @ C_prev


@dataclass(frozen=True)
class KernelCovariance:
    """O(1/N) prior covariance of the kernels of all layers (T6) as an operator.

    `cov(A, layer=l, cotangent_layer=m)` is Cov(C(l), <A, C(m)>) = (1/N) sum_{k <= min(l, m)}
    J_{l<-k} V(k) J_{m<-k}^T [A], computed by one backward and one forward sweep (T13 form).

    Attributes:
      spec: the network; kernels: NNGP stack (L+1, P, P); responses: J(1..L) at the NNGP path;
      roots: (L, P, P) symmetric square roots of kernels 0..L-1 (None for linear phi);
      second: (L, P, P) exact <phi phi^T> at kernels 0..L-1;
      phi: (L, M, P) activations of the common random numbers of each layer (None for linear).
    """

    spec: NetworkSpec
    kernels: jnp.ndarray
    responses: Response
    roots: jnp.ndarray | None
    second: jnp.ndarray
    phi: jnp.ndarray | None

    @property
    def depth(self) -> int:
        return self.spec.depth

    def v(self, k: int, A, n_batches: int | None = None):
        """V(k)[A] of layer k = 1..L at the NNGP kernel of layer k-1 (T5).

        With n_batches, the (n_batches, P, P) estimates from disjoint blocks of the common random
        numbers: their mean is exactly the full estimate, their spread gives its standard error.
        """
        g = self.spec.gains[k - 1]
        if self.phi is None:
            V = v_contract_linear(g, self.kernels[k - 1], A)
            return V if n_batches is None else jnp.broadcast_to(V, (n_batches,) + V.shape)
        if n_batches is None:
            return v_contract(g, self.phi[k - 1], self.second[k - 1], A)
        phi = self.phi[k - 1]
        blocks = phi[: len(phi) // n_batches * n_batches].reshape(n_batches, -1, phi.shape[-1])
        return jax.vmap(v_contract, (None, 0, None, None))(g, blocks, self.second[k - 1], A)

    def layer_response(self, k: int) -> Response:
        """J(k) = d mu_k / dC at the NNGP kernel of layer k-1 (T2)."""
        return Response(self.responses.dd[k - 1], self.responses.d2p[k - 1])

    def pullback(self, A, cotangent_layer: int | None = None) -> dict:
        """{k: J_{m<-k}^T [A] for k = 1..m}, m = cotangent_layer (default L): the backward sweep."""
        m = self.depth if cotangent_layer is None else cotangent_layer
        back = {m: jnp.asarray(A)}
        for k in range(m, 1, -1):
            back[k - 1] = self.layer_response(k).vjp(back[k])
        return back

    def push_forward(self, back: dict, n_batches: int | None = None) -> list:
        """[(1/N) sum_{k <= l, k in back} J_{l<-k} V(k)[back[k]] for l = 0..L]: the forward sweep.

        With n_batches, every entry is (n_batches, P, P): one sweep per block of the common random
        numbers (the sweep is linear in V, so the blocks average to the full result).
        """
        first = jnp.zeros_like(next(iter(back.values())))
        out = [first if n_batches is None else jnp.broadcast_to(first, (n_batches,) + first.shape)]
        for k in range(1, self.depth + 1):
            jvp = self.layer_response(k).jvp
            delta = jvp(out[-1]) if n_batches is None else jax.vmap(jvp)(out[-1])
            if k in back:
                delta = delta + self.v(k, back[k], n_batches) / self.spec.width
            out.append(delta)
        return out

    def propagate(self, A, cotangent_layer: int | None = None) -> list:
        """[Cov(C(l), <A, C(m)>) for l = 0..L] with m = cotangent_layer (default L) (T6, T13)."""
        return self.push_forward(self.pullback(A, cotangent_layer))

    def __call__(self, A, layer: int | None = None, cotangent_layer: int | None = None):
        """Sigma[A] = Cov(C(layer), <A, C(cotangent_layer)>) (both default to L), (P, P)."""
        return self.propagate(A, cotangent_layer)[self.depth if layer is None else layer]

    def with_se(self, A, layer: int | None = None, cotangent_layer: int | None = None, n_batches: int = 16):
        """(Sigma[A], its Monte Carlo standard error), both (P, P): the spread of the estimates from
        n_batches disjoint blocks of the common random numbers over sqrt(n_batches) (T5; the sweep is
        linear in V, so the blocks average exactly to Sigma[A]); the SE is zero for linear phi."""
        most = np.inf if self.phi is None else self.phi.shape[1]
        if isinstance(n_batches, bool) or not isinstance(n_batches, int) or not 2 <= n_batches <= most:
            raise InputError(
                f"n_batches: must be an integer from 2 to the number of samples, got {n_batches!r}"
            )
        back = self.pullback(A, cotangent_layer)
        blocks = self.push_forward(back, n_batches=n_batches)[self.depth if layer is None else layer]
        if self.phi is None:
            return blocks[0], jnp.zeros_like(blocks[0])
        return blocks.mean(axis=0), standard_error(blocks, "batches")

    def dense(self, layer: int | None = None, cotangent_layer: int | None = None) -> np.ndarray:
        """The covariance as a dense (P, P, P, P) array, applying the operator to a basis.

        Only for small P: P^4 doubles (0.8 GB at P = 100).
        """
        P = self.kernels.shape[-1]
        out = np.empty((P, P, P, P))
        for a in range(P):
            for b in range(a, P):
                E = jnp.zeros((P, P)).at[a, b].add(0.5).at[b, a].add(0.5)  # symmetric unit
                col = np.asarray(self(E, layer, cotangent_layer))
                out[:, :, a, b] = out[:, :, b, a] = col
        return out

    def mean_shift(self, n_paths: int = 256, key=1) -> np.ndarray:
        """O(1/N) shift of the prior mean kernels (T7), (L+1, P, P); zero for linear phi.

        shift(k) = J(k)[shift(k-1)] + (1/2) E mu_k''[dC(k-1), dC(k-1)], with dC the leading-order
        Gaussian fluctuations, sampled as n_paths finite-width layer draws propagated linearly.
        """
        spec, P = self.spec, self.kernels.shape[-1]
        if self.phi is None or self.roots is None:  # linear phi: mu is linear, no curvature
            return np.zeros((self.depth + 1, P, P))
        shifts = [jnp.zeros((P, P))]
        for k, paths in enumerate(itertools.islice(self._paths(n_paths, key), self.depth), start=1):
            f = partial(mu, spec.act, spec.gains[k - 1], spec.bias_vars[k])
            C_bar = self.kernels[k - 1]

            def curvature(d, f=f, C_bar=C_bar):
                return jax.jvp(lambda C: jax.jvp(f, (C,), (d,))[1], (C_bar,), (d,))[1]

            second = jnp.mean(jax.lax.map(curvature, paths, batch_size=32), axis=0)
            shifts.append(self.layer_response(k).jvp(shifts[-1]) + 0.5 * second)
        return np.asarray(jnp.stack(shifts))

    def output_paths(self, n_paths: int = 256, key=1) -> jnp.ndarray:
        """(n_paths, P, P) draws of the output kernel's leading-order fluctuation dC(L) about the
        NNGP, with covariance Sigma(L) (T6): one finite layer of N neurons per layer, propagated
        linearly by the responses J."""
        return deque(self._paths(n_paths, key), maxlen=1).pop()  # only one layer's paths alive at once

    def _paths(self, n_paths: int, key):
        """Yield dC(0) = 0, dC(1), ..., dC(L), each (n_paths, P, P): dC(k) = J(k)[dC(k-1)] + the
        draws of C - mu(C_prev) of one finite layer of width N (T5)."""
        spec, P = self.spec, self.kernels.shape[-1]
        roots = self.roots if self.roots is not None else jax.vmap(psd_sqrt)(self.kernels[:-1])
        keys = jax.random.split(as_key(key), self.depth)
        paths = jnp.zeros((n_paths, P, P))
        yield paths
        for k in range(1, self.depth + 1):
            noise = _layer_noise(
                spec.act,
                spec.gains[k - 1],
                spec.width,
                roots[k - 1],
                self.second[k - 1],
                keys[k - 1],
                n_paths,
            )
            paths = jax.vmap(self.layer_response(k).jvp)(paths) + noise
            yield paths


@partial(jax.jit, static_argnums=(0, 2, 6))
def _layer_noise(act, g, width, root, second, key, n):
    """n draws of C - mu(C_prev) for one finite layer of `width` neurons, root = sqrt(C_prev)."""

    def one(k):
        phi = act.fn(jax.random.normal(k, (width, root.shape[0])) @ root)
        return g * (phi.T @ phi / width - second)

    return jax.lax.map(one, jax.random.split(key, n), batch_size=16)


@limit_blas_threads
def kernel_covariance(
    spec: NetworkSpec, X, X_test=None, *, key=0, n_samples: int = 4096, nngp=None
) -> KernelCovariance:
    """Prior kernel covariance operator of every layer, O(1/N) (T6), on train + test inputs.

    Args:
      spec: the network; X: (P, d) inputs; X_test: optional (P_test, d).
      key: int or PRNGKey for the common random numbers.
      n_samples: Monte Carlo samples M per layer for V (T5); unused for linear phi.
      nngp: the NNGP stack (L+1, P', P') of these inputs if already computed (not recomputed).

    Returns:
      KernelCovariance: call it on a symmetric (P', P') matrix; `.dense()` for small P.

    Example:
      >>> import numpy as np, critical_kernels as ck
      >>> X = np.eye(2)  # two orthogonal inputs, d = 2: C0 = (g_in / d) X X^T = I
      >>> spec = ck.NetworkSpec(depth=1, width=10, activation="linear", g_in=2.0, g_b=0.0)
      >>> Sig = kernel_covariance(spec, X)  # linear phi: exact (Wishart), no Monte Carlo
      >>> A = np.diag([1.0, 0.0])
      >>> np.asarray(Sig(A) * spec.width).round(12)  # N Cov(C1_ab, C1_00) = 2 C0_a0 C0_b0
      array([[2., 0.],
             [0., 0.]])
    """
    X_all = check_inputs(X, X_test)
    kernels = jnp.asarray(nngp_stack(spec, X_all) if nngp is None else _checked_nngp(spec, nngp, len(X_all)))
    below = kernels[:-1]  # the kernels each layer's V is evaluated at
    second = jax.vmap(lambda C: gaussian_moments(spec.act, "pp", C))(below)
    roots = phi = None  # linear phi: V is exact and needs neither
    if not (spec.act.is_linear):
        roots = jax.vmap(psd_sqrt)(below)
        z = jax.random.normal(as_key(key), (spec.depth, n_samples, kernels.shape[-1]))
        phi = spec.act.fn(jnp.einsum("lmp,lpq->lmq", z, roots))
    return KernelCovariance(spec, kernels, layer_responses(spec, kernels), roots, second, phi)


def _checked_nngp(spec: NetworkSpec, nngp, P: int) -> np.ndarray:
    """A precomputed NNGP stack, checked against the number of inputs it claims to belong to."""
    nngp = np.asarray(nngp, dtype=np.float64)
    if nngp.shape != (spec.depth + 1, P, P):
        raise InputError(f"nngp: expected shape {(spec.depth + 1, P, P)} for these inputs, got {nngp.shape}")
    return nngp


class _Variances(NamedTuple):
    """The traced weight and bias variances of a network: g_in, g_1..g_L (L,), g_b of b0..bL (L+1,)."""

    g_in: float
    gains: jnp.ndarray
    bias_vars: jnp.ndarray


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _prior_networks(act, depth, width, n, X, var: _Variances, key):
    """C(1..L) of n random finite networks, (n, L, P, P), batched by lax.map."""
    P, d = X.shape
    g_in, gains, bias_vars = var

    def one(k):
        keys = jax.random.split(k, 2 * depth)
        W0 = jax.random.normal(keys[0], (d, width)) * jnp.sqrt(g_in / d)
        h = X @ W0 + jax.random.normal(keys[1], (width,)) * jnp.sqrt(bias_vars[0])
        out = []
        for l in range(1, depth + 1):
            a = act.fn(h)
            out.append(gains[l - 1] / width * a @ a.T + bias_vars[l])
            if l < depth:
                W = jax.random.normal(keys[2 * l], (width, width)) * jnp.sqrt(gains[l - 1] / width)
                h = a @ W + jax.random.normal(keys[2 * l + 1], (width,)) * jnp.sqrt(bias_vars[l])
        return jnp.stack(out)

    per_network = width * max(width, P)  # floats of the largest per-network array
    return jax.lax.map(one, jax.random.split(key, n), batch_size=max(1, min(n, 2**24 // per_network)))


@limit_blas_threads
def sample_prior_kernels(spec: NetworkSpec, X, n: int, key=0, X_test=None) -> np.ndarray:
    """Empirical kernels of n random finite networks drawn from the prior, batched.

    C(l) = (g_l/N) phi(h_l)^T phi(h_l) + g_b for l = 1..L, and C(0) the input kernel.

    Returns:
      NumPy (n, L+1, P', P').
    """
    X_all = check_inputs(X, X_test)
    var = _Variances(spec.g_in, jnp.asarray(spec.gains), jnp.asarray(spec.bias_vars))
    hidden = _prior_networks(spec.act, spec.depth, spec.width, int(n), jnp.asarray(X_all), var, as_key(key))
    C0 = np.broadcast_to(input_kernel(spec, X_all), (n, 1) + hidden.shape[-2:])
    return np.concatenate([C0, np.asarray(hidden)], axis=1)
