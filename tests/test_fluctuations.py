"""Prior kernel fluctuations (T5-T7) and the first-order adaptation (T13-T15)."""

import numpy as np
import pytest
from reference import finite_network_kernels

import critical_kernels as ck
from critical_kernels.estimators import linear_output_shift


def _problem(P=6, d=4, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((P, P))
    return rng.standard_normal((P, d)), A + A.T


def _empirical_cov(kernels, A):
    """Cov(C_ab, <A, C>) over networks, with the standard error of each entry."""
    s = np.einsum("mij,ij->m", kernels, A)
    prod = (kernels - kernels.mean(0)) * (s - s.mean())[:, None, None]
    return prod.mean(0) * len(s) / (len(s) - 1), prod.std(0, ddof=1) / np.sqrt(len(s))


@pytest.mark.parametrize("activation", ["erf", "linear"])
def test_output_kernel_covariance_matches_finite_networks(activation):
    X, A = _problem()
    spec = ck.NetworkSpec(
        depth=3, width=64, activation=activation, g_w=1.5 if activation == "erf" else 0.9, g_b=0.1
    )
    sigma = np.asarray(ck.kernel_covariance(spec, X, key=0, n_samples=200_000)(A))
    kernels = ck.sample_prior_kernels(spec, X, 4000, key=7)[:, -1]
    emp, se = _empirical_cov(kernels, A)
    # 4000 networks; O(1/N^2) corrections at N = 64 are ~2 % of Sigma, below one standard error;
    # V's own Monte Carlo error (2e5 samples) is ~0.3 %: 3 standard errors, max over entries
    assert np.max(np.abs(emp - sigma) / se) < 3.0


def test_cross_layer_block_matches_finite_networks():
    X, A = _problem(seed=2)
    spec = ck.NetworkSpec(depth=3, width=64, activation="erf", g_w=1.5, g_b=0.1)
    cov = ck.kernel_covariance(spec, X, key=1, n_samples=200_000)
    kernels = ck.sample_prior_kernels(spec, X, 4000, key=8)
    s = np.einsum("mij,ij->m", kernels[:, 3], A)
    prod = (kernels[:, 1] - kernels[:, 1].mean(0)) * (s - s.mean())[:, None, None]
    se = prod.std(0, ddof=1) / np.sqrt(len(s))
    assert np.max(np.abs(prod.mean(0) - np.asarray(cov(A, layer=1, cotangent_layer=3))) / se) < 3.0


def test_sampler_agrees_with_numpy_reference_networks():
    X, _ = _problem()
    spec = ck.NetworkSpec(depth=2, width=32, activation="erf", g_w=1.5, g_b=0.1)
    ours = ck.sample_prior_kernels(spec, X, 3000, key=3)
    ref = finite_network_kernels(X, "erf", 2, 32, 1.0, 1.5, 0.1, 3000, seed=11)
    # two independent samples of the same law: means and variances within 4 combined SE
    for stat in (lambda k: k, lambda k: k**2):
        a, b = stat(ours), stat(ref)
        se = np.sqrt(a.var(0) / len(a) + b.var(0) / len(b))[1:]
        assert np.max(np.abs(a.mean(0) - b.mean(0))[1:] / se) < 4.0


@pytest.mark.slow  # a rate over five widths and 15 000 networks: statistical validation
def test_kernel_variance_falls_as_one_over_width():
    X, _ = _problem(P=4)
    widths = np.array([16, 32, 64, 128])
    variances = []
    for N in widths:
        spec = ck.NetworkSpec(depth=2, width=int(N), activation="erf", g_w=1.5, g_b=0.1)
        variances.append(ck.sample_prior_kernels(spec, X, 3000, key=int(N))[:, -1, 0, 1].var())
    slope = np.polyfit(np.log(widths), np.log(variances), 1)[0]
    # 3000 networks: each log-variance has SE ~ sqrt(2/3000) = 0.026; slope -1 +- 0.1 (issue 3)
    assert abs(slope + 1.0) < 0.1


def test_dense_covariance_is_symmetric_and_consistent():
    X, A = _problem(P=4)
    cov = ck.kernel_covariance(ck.NetworkSpec(depth=2, width=10, g_w=1.3, g_b=0.1), X, n_samples=20_000)
    dense = cov.dense()
    np.testing.assert_allclose(np.einsum("abcd,cd->ab", dense, A), cov(A), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(dense, dense.transpose(2, 3, 0, 1), atol=1e-4 * np.abs(dense).max())


def test_linear_perturbative_equals_closed_form():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((8, 5)), rng.choice([-1.0, 1.0], (8, 2))
    spec = ck.NetworkSpec(depth=3, width=100, activation="linear", g_w=[0.8, 1.2, 1.0], kappa=0.1, n_out=2)
    res = ck.perturbative_kernels(spec, X, Y, options=ck.MonteCarlo(rtol=None))
    nngp = ck.nngp_kernels(spec, X)
    ref = linear_output_shift(nngp[-1], Y, 0.1, 3, 100)
    assert res.se is None and res.estimates is None  # linear phi: V exact
    assert res.method.label == "closed form"
    np.testing.assert_allclose(res.kernels[-1] - nngp[-1], ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())


@pytest.mark.slow  # statistical: two widths of first-order Monte Carlo (~16 s)
def test_perturbative_shift_scales_as_one_over_width_and_keeps_test_rows():
    rng = np.random.default_rng(1)
    X, X_test, Y = rng.standard_normal((8, 5)), rng.standard_normal((3, 5)), rng.choice([-1.0, 1.0], 8)
    shifts = []
    for N in (100, 200):
        spec = ck.NetworkSpec(depth=2, width=N, g_w=1.5, g_b=0.1, kappa=0.1)
        res = ck.perturbative_kernels(spec, X, Y, X_test, options=ck.MonteCarlo(256, rtol=None), key=0)
        assert res.kernels.shape == (3, 11, 11) and np.all(res.info.conj_kernels[:, 8:, :] == 0)
        shifts.append(res.kernels - ck.nngp_kernels(spec, X, X_test))
    np.testing.assert_allclose(shifts[0], 2 * shifts[1], rtol=1e-10, atol=1e-14)  # same CRN: exact 1/N


@pytest.mark.slow  # statistical validation: 20 000 finite networks against T7
def test_prior_mean_shift_matches_finite_networks():
    X = np.random.default_rng(0).standard_normal((5, 4))
    spec = ck.NetworkSpec(depth=3, width=32, activation="erf", g_w=2.0, g_b=0.1)
    shift = ck.kernel_covariance(spec, X, key=0, n_samples=1000).mean_shift(n_paths=2048)[-1]
    kernels = ck.sample_prior_kernels(spec, X, 20_000, key=5)[:, -1]
    emp = kernels.mean(0) - ck.nngp_kernels(spec, X)[-1]
    se = kernels.std(0, ddof=1) / np.sqrt(len(kernels))
    # T7 is the O(1/N) term; the O(1/N^2) remainder at N = 32 is ~3 % of it, below one SE.
    assert np.max(np.abs(emp - shift) / se) < 4.0  # measured 1.4
    assert np.max(np.abs(emp) / se) > 4.0  # the shift is resolved: the NNGP alone is rejected


@pytest.mark.slow  # statistical validation: 24 independent estimates
def test_covariance_contraction_se_matches_the_spread_over_keys():
    """Sigma[A] with its SE from 16 blocks of the common random numbers (T5): the blocks average to
    Sigma[A] exactly, and the SE matches the spread of 24 independent estimates (different keys)."""
    X, _ = _problem()
    spec = ck.NetworkSpec(depth=3, width=64, activation="erf", g_w=1.5, g_b=0.1)
    A = np.outer(np.arange(6.0), np.ones(6)) + np.eye(6)
    A = A + A.T
    values, ses = [], []
    for key in range(24):
        Sig = ck.kernel_covariance(spec, X, key=key, n_samples=1024)
        value, se = Sig.with_se(A, layer=2)
        np.testing.assert_allclose(value, Sig(A, layer=2), rtol=1e-10, atol=1e-14)
        values.append(np.asarray(value))
        ses.append(np.asarray(se))
    spread = np.std(values, axis=0, ddof=1)
    reported = np.sqrt(np.mean(np.square(ses), axis=0))
    ratio = np.median(spread / reported)
    # 24 keys: the spread is known to ~15 %, the SE from 16 blocks to ~18 %; median over 36 entries
    assert 0.75 < ratio < 1.33, ratio
    linear = ck.kernel_covariance(spec.replace(activation="linear"), X)
    assert np.all(np.asarray(linear.with_se(A)[1]) == 0)  # V is exact for linear phi
    with pytest.raises(ck.InputError, match="n_batches"):
        ck.kernel_covariance(spec, X, n_samples=64).with_se(A, n_batches=1)
