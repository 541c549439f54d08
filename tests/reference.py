"""Independent references for the tests, written without the package's code paths.

NumPy/SciPy only: Monte Carlo over Gaussian pairs, finite random networks, and 1-D
Gauss-Hermite sums with nodes from NumPy.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

PHI = {
    "erf": erf,
    "relu": lambda x: np.maximum(x, 0.0),
    "linear": lambda x: x,
    "tanh": np.tanh,
    "gelu": lambda x: 0.5 * x * (1.0 + erf(x / np.sqrt(2.0))),
}

DPHI = {
    "erf": lambda x: 2.0 / np.sqrt(np.pi) * np.exp(-x * x),
    "relu": lambda x: (x > 0).astype(float),
    "linear": lambda x: np.ones_like(x),
    "tanh": lambda x: 1.0 - np.tanh(x) ** 2,
}


def mc_pair_moment(f, g, qa, qb, c, n=2_000_000, seed=0):
    """Monte Carlo <f(h_a) g(h_b)> and its standard error, (h_a, h_b) ~ N(0, [[qa, c], [c, qb]])."""
    rng = np.random.default_rng(seed)
    L = np.linalg.cholesky(np.array([[qa, c], [c, qb]]))
    h = rng.standard_normal((n, 2)) @ L.T
    vals = f(h[:, 0]) * g(h[:, 1])
    return vals.mean(), vals.std(ddof=1) / np.sqrt(n)


def gh_self_moment(f, q, degree=80):
    """<f(h)> for h ~ N(0, q) by a 1-D Gauss-Hermite rule (NumPy nodes)."""
    z, w = np.polynomial.hermite_e.hermegauss(degree)
    return float(np.sum(w * f(np.sqrt(q) * z)) / np.sqrt(2.0 * np.pi))


def finite_network_kernels(X, activation, depth, width, g_in, g_w, g_b, n_nets, seed=0):
    """Empirical kernels C(l) = g_l/N phi(h_l)^T phi(h_l) + g_b of random finite networks.

    Returns an array (n_nets, depth+1, P, P); layer 0 is the deterministic input kernel.
    """
    phi = PHI[activation]
    rng = np.random.default_rng(seed)
    P, d = X.shape
    out = np.empty((n_nets, depth + 1, P, P))
    for m in range(n_nets):
        out[m, 0] = g_in / d * X @ X.T + g_b
        h = X @ (rng.standard_normal((d, width)) * np.sqrt(g_in / d)) + rng.standard_normal(width) * np.sqrt(
            g_b
        )
        for l in range(1, depth + 1):
            a = phi(h)
            out[m, l] = g_w / width * a @ a.T + g_b
            if l < depth:
                W = rng.standard_normal((width, width)) * np.sqrt(g_w / width)
                h = a @ W + rng.standard_normal(width) * np.sqrt(g_b)
    return out


def gp_test_loss(C, Y, Y_test, kappa):
    """Pacelli et al.'s test loss of the GP predictive (T21) from one kernel C on train + test rows
    (training rows first), written out in NumPy: mse of the mean plus the mean predictive variance."""
    P = len(Y)
    K = C[:P, :P] + kappa * np.eye(P)
    mean = C[P:, :P] @ np.linalg.solve(K, Y)
    var = np.diag(C[P:, P:] - C[P:, :P] @ np.linalg.solve(K, C[:P, P:]))
    return np.mean((mean - Y_test) ** 2) + np.mean(var)
