"""Exact posterior by importance weighting (THEORY 7), and first-order theory against it (T13)."""

import numpy as np
import pytest
from scipy import integrate, stats

import critical_kernels as ck
from critical_kernels.estimators import exact_posterior_kernels


def test_importance_weighting_equals_one_dimensional_quadrature():
    # P = 1, linear, one hidden layer: C1 = g q chi2_N / N + g_b, so E[C1 | y] is a 1-D integral
    N, g, g_b, kappa, y = 5, 1.3, 0.2, 0.1, 2.0
    X = np.array([[1.5, -0.5]])
    spec = ck.NetworkSpec(depth=1, width=N, activation="linear", g_w=g, g_b=g_b, kappa=kappa)
    q = (X @ X.T / 2 + g_b).item()
    scale = g * q / N
    weight = lambda c: stats.chi2.pdf((c - g_b) / scale, N) * stats.norm.pdf(y, 0, np.sqrt(c + kappa))  # noqa: E731
    num = integrate.quad(lambda c: c * weight(c), g_b, np.inf, epsabs=1e-13)[0]
    ref = num / integrate.quad(weight, g_b, np.inf, epsabs=1e-13)[0]
    res = exact_posterior_kernels(spec, X, [y], options=ck.PriorImportance(200_000, batch_size=50_000), key=3)
    assert abs(res.kernels[1, 0, 0] - ref) < 4 * res.se[1, 0, 0]  # 4 standard errors
    assert abs(ref - (scale * N + g_b)) > 10 * res.se[1, 0, 0]  # the posterior really moved
    assert res.info.ess > 1e4 and res.info.n_samples == 200_000
    assert res.method.label == "prior importance" and res.estimates is None


def test_options_of_the_wrong_type_are_named():
    spec = ck.NetworkSpec(depth=1, width=5, activation="linear")
    with pytest.raises(ck.InputError, match=r"options: expected PriorImportance\(\.\.\.\)"):
        exact_posterior_kernels(spec, np.ones((2, 2)), [1.0, -1.0], options=ck.Quadrature())
    with pytest.raises(ck.InputError, match="PriorImportance.batch_size"):
        ck.PriorImportance(batch_size=0)


@pytest.mark.slow
def test_first_order_shift_matches_exact_posterior_shift():
    data = ck.datasets.xor(n_train=8, n_test=0, dim=4, seed=0)
    norms = []
    for N in (50, 100, 200):
        spec = ck.NetworkSpec(depth=1, width=N, activation="erf", g_w=1.5, g_b=0.1, kappa=0.5)
        exact = exact_posterior_kernels(
            spec, data.X, data.Y, options=ck.PriorImportance(400_000, batch_size=8192), key=1
        )
        pert = ck.perturbative_kernels(spec, data.X, data.Y, options=ck.MonteCarlo(200_000, rtol=None))
        nngp = ck.nngp_kernels(spec, data.X)[-1]
        d_exact, d_pert = exact.kernels[-1] - nngp, pert.kernels[-1] - nngp
        # the importance-sampling noise is 5-10 % of the shift (se); cosine >= 0.99 (issue 3)
        assert np.linalg.norm(exact.se[-1]) < 0.12 * np.linalg.norm(d_exact)
        cosine = np.sum(d_exact * d_pert) / (np.linalg.norm(d_exact) * np.linalg.norm(d_pert))
        assert cosine >= 0.99, (N, cosine)  # measured 0.999, 0.996, 0.997
        norms.append(N * np.linalg.norm(d_exact))
    # size falls as 1/N: N |shift| constant within the estimator noise (measured 1.13, 1.20, 1.18)
    assert np.ptp(norms) < 0.15 * np.mean(norms)
