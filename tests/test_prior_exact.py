"""The prior against exact finite-N results, an independent route to T5-T7.

With one input and no biases, deep ReLU networks at g_w = 2 and deep linear networks at g_w = 1
keep the mean kernel, E[C(L)] = C(0), and have E[C(L)^2] / E[C(L)]^2 = (1 + 5/N)^L and (1 + 2/N)^L
exactly at every width N: given C(l-1) = q the N pre-activations are i.i.d. N(0, q), and
E[(g/N sum_i phi(h_i)^2)^2] = q^2 (1 + c/N) with c = g^2 E[phi^4]/q^2 - 1 (ReLU: 4 * 3/2 - 1 = 5;
linear: 3 - 1 = 2). The O(1/N) covariance operator must give the first-order term, Var C(L) =
(c L / N) C(0)^2. One linear layer on several inputs has an exactly Wishart kernel:
Cov[C_ab, C_cd] = g^2 (C0_ac C0_bd + C0_ad C0_bc) / N.
"""

import numpy as np
import pytest

import critical_kernels as ck
from critical_kernels.nngp import input_kernel

ONE_INPUT = np.array([[1.0, -2.0, 0.5]])
EXCESS = {"relu": 5.0, "linear": 2.0}  # c of the module docstring
GAIN = {"relu": 2.0, "linear": 1.0}  # the gain that keeps E[C] fixed


def _spec(activation: str, depth: int, width: int) -> ck.NetworkSpec:
    return ck.NetworkSpec(depth=depth, width=width, activation=activation, g_w=GAIN[activation], g_b=0.0)


@pytest.mark.parametrize("activation", ["relu", "linear"])
@pytest.mark.parametrize("depth", [1, 3, 10])
def test_covariance_operator_has_the_exact_first_order_variance(activation, depth):
    width = 50
    spec = _spec(activation, depth, width)
    C0 = input_kernel(spec, ONE_INPUT)[0, 0]
    cov = ck.kernel_covariance(spec, ONE_INPUT, n_samples=1 << 16, key=1)
    var, se = (float(np.asarray(v)[0, 0]) for v in cov.with_se(np.ones((1, 1))))
    expected = EXCESS[activation] * depth / width * C0**2
    if activation == "linear":  # V in closed form: no Monte Carlo error
        assert var == pytest.approx(expected, rel=1e-12)
    else:  # Monte Carlo V (T5): within 4 of its standard errors (spread of 16 blocks)
        assert se > 0 and abs(var - expected) <= 4 * se, (var, expected, se)


def _ratio_and_mean(C: np.ndarray, n_batches: int = 20):
    """E[C^2]/E[C]^2 and E[C] with jackknife standard errors over n_batches blocks of networks."""
    blocks = C.reshape(n_batches, -1)
    m1, m2 = blocks.mean(axis=1), (blocks**2).mean(axis=1)
    loo1 = (m1.sum() - m1) / (n_batches - 1)
    loo2 = (m2.sum() - m2) / (n_batches - 1)
    ratio, mean = m2.mean() / m1.mean() ** 2, m1.mean()
    se = lambda loo: np.sqrt((n_batches - 1) / n_batches * ((loo - loo.mean()) ** 2).sum())  # noqa: E731
    return ratio, se(loo2 / loo1**2), mean, se(loo1)


@pytest.mark.parametrize("activation", ["relu", "linear"])
@pytest.mark.parametrize(("width", "depth", "n"), [(10, 1, 40_000), (10, 3, 40_000), (50, 10, 2_000)])
def test_finite_networks_have_the_exact_moments_at_every_width(activation, width, depth, n):
    spec = _spec(activation, depth, width)
    C0 = input_kernel(spec, ONE_INPUT)[0, 0]
    C = ck.sample_prior_kernels(spec, ONE_INPUT, n=n, key=depth)[:, -1, 0, 0]
    ratio, ratio_se, mean, mean_se = _ratio_and_mean(C)
    # exact at this N, not to O(1/N): only the Monte Carlo error of n networks remains (4 SE)
    assert abs(ratio - (1 + EXCESS[activation] / width) ** depth) <= 4 * ratio_se, (ratio, ratio_se)
    assert abs(mean - C0) <= 4 * mean_se, (mean, C0, mean_se)


def _wishart(C0: np.ndarray, g: float, width: int) -> np.ndarray:
    """Cov[C_ab, C_cd] = g^2 (C0_ac C0_bd + C0_ad C0_bc) / N as a (P, P, P, P) array."""
    return g**2 * (np.einsum("ac,bd->abcd", C0, C0) + np.einsum("ad,bc->abcd", C0, C0)) / width


def test_one_linear_layer_is_wishart_in_the_operator_and_in_finite_networks():
    X = np.random.default_rng(0).normal(size=(3, 5))
    g, width = 1.7, 7
    spec = ck.NetworkSpec(depth=1, width=width, activation="linear", g_w=g, g_b=0.0)
    C0 = input_kernel(spec, X)
    exact = _wishart(C0, g, width)
    cov = ck.kernel_covariance(spec, X)
    for c in range(3):
        for d in range(3):
            A = np.zeros((3, 3))
            A[c, d] = A[d, c] = 0.5 if c != d else 1.0  # symmetric: <A, C> = C_cd
            np.testing.assert_allclose(np.asarray(cov(A)), exact[:, :, c, d], rtol=1e-12, atol=1e-14)
    # finite networks, N = 7: the same covariance exactly; entrywise within 4 SE of 40 000 networks
    C = ck.sample_prior_kernels(spec, X, n=40_000, key=3)[:, 1].reshape(40_000, 9)
    blocks = np.stack([np.cov(b, rowvar=False) for b in C.reshape(20, -1, 9)])
    got, se = blocks.mean(axis=0), blocks.std(axis=0, ddof=1) / np.sqrt(20)
    assert np.all(np.abs(got - exact.reshape(9, 9)) <= 4 * se + 1e-12), np.abs(got - exact.reshape(9, 9)) / se
