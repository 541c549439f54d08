"""linear_exact (T18): exact posterior kernels of deep linear networks against independent references.

References: importance-weighted prior networks (exact_posterior_kernels, THEORY 7), the NNGP recursion
(N -> infinity, kappa -> infinity), the first-order closed form (T15) as N grows, and the Monte Carlo
average of the evidence over prior networks. None of them shares code with the estimator.
"""

import numpy as np
import pytest

import critical_kernels as ck
from critical_kernels.errors import ConvergenceError, InputError, SpecError
from critical_kernels.estimators.base import Result
from critical_kernels.estimators.linear_exact import LinearExactInfo, linear_posterior_kernels

GAINS = (1.2, 0.9, 1.1)
BIASES = (0.1, 0.2, 0.15, 0.1)


def tiny_problem(seed=1, P=6, P_test=2, d=3):
    rng = np.random.default_rng(seed)
    X, X_test = rng.standard_normal((P, d)), rng.standard_normal((P_test, d))
    return X, np.sign(rng.standard_normal(P)), X_test


def linear_spec(depth, width, kappa=0.2):
    return ck.NetworkSpec(
        depth=depth,
        width=width,
        activation="linear",
        g_w=GAINS[:depth],
        g_b=BIASES[: depth + 1],
        kappa=kappa,
    )


def log_gauss(C_train, Y, kappa):
    """ln N(Y; 0, C + kappa I) in plain NumPy, batched over leading axes (independent of the package)."""
    K = C_train + kappa * np.eye(C_train.shape[-1])
    _, logdet = np.linalg.slogdet(K)
    alpha = np.linalg.solve(K, np.broadcast_to(Y[:, None], K.shape[:-1] + (1,)))[..., 0]
    quad = np.einsum("...i,...i->...", Y, alpha)
    return -0.5 * (quad + logdet + len(Y) * np.log(2 * np.pi))


@pytest.mark.parametrize(
    "depth, width, kappa, n_ref",  # L = 1 in the fast tier (2^15 reference networks, ~5 s); 2^17 at
    [  # L = 2, 3 take ~35 s each
        (1, 10, 0.2, 2**15),
        pytest.param(2, 12, 0.3, 2**17, marks=pytest.mark.slow),
        pytest.param(3, 15, 0.5, 2**17, marks=pytest.mark.slow),
    ],
)
def test_matches_importance_weighted_exact_posterior(depth, width, kappa, n_ref):
    X, Y, X_test = tiny_problem()
    spec = linear_spec(depth, width, kappa)
    est = linear_posterior_kernels(spec, X, Y, X_test)
    assert est.ok and est.estimator == "linear_exact" and isinstance(est.info, LinearExactInfo)
    assert est.method.label == "quadrature" and est.estimates is None
    assert est.kernels.shape == est.se.shape == (depth + 1, 8, 8)
    ref = ck.exact_posterior_kernels(spec, X, Y, X_test, options=ck.PriorImportance(n_ref), key=depth)
    np.testing.assert_allclose(est.kernels[0], ref.kernels[0], rtol=1e-12)  # C0 is deterministic
    se = ref.se[1:]
    z = np.abs(est.kernels[1:] - ref.kernels[1:]) / se
    # the quadrature bound is negligible against the Monte Carlo error, so only ref.se counts; 4 SE
    # for the max over 36 L entries keeps a family-wise false alarm < 1 % (measured max z 2.2, 2.7,
    # 2.0 and rms z 1.07, 0.98, 1.00 for L = 1, 2, 3 with 2^17 networks: the reference's se is
    # calibrated; L = 1 with 2^15, keys 1-3: max z 1.7, 2.0, 1.1, rms z 0.79, 0.85, 0.51)
    assert est.se.max() < 1e-3 * se.min()
    assert z.max() < 4.0, z.max()
    # power: the NNGP (no adaptation) is rejected by the same test (measured max z 126, 110, 96 with
    # 2^17 networks; L = 1 with 2^15: 59-62)
    z_nngp = np.abs(ck.nngp_kernels(spec, X, X_test)[1:] - ref.kernels[1:]) / se
    assert z_nngp.max() > 20.0, z_nngp.max()
    # the posterior predictive of f* on the two test rows (T21): quadrature against the weighted
    # networks' jackknife SE, 4 SE for 4 numbers
    exact, weighted = est.predictive, ref.predictive
    assert exact.kind is None and exact.mean.shape == exact.var.shape == (2, 1)
    assert np.all(np.abs(exact.mean - weighted.mean) < 4 * weighted.mean_se), (exact.mean, weighted.mean)
    assert np.all(np.abs(exact.var - weighted.var) < 4 * weighted.var_se), (exact.var, weighted.var)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_infinite_width_gives_nngp_kernels_and_gp_evidence(depth):
    X, Y, X_test = tiny_problem()
    spec = linear_spec(depth, 10**8, kappa=0.05)
    est = linear_posterior_kernels(spec, X, Y, X_test)
    nngp = ck.nngp_kernels(spec, X, X_test)
    # the remaining difference is the O(P/N) adaptation (measured 3e-8 .. 8e-8 relative; 3e-7 ..
    # 8e-7 at N = 1e7)
    assert np.max(np.abs(est.kernels - nngp)) < 1e-6 * np.max(np.abs(nngp))
    gp_evidence = log_gauss(nngp[-1, :6, :6], Y, spec.kappa)
    assert abs(est.info.log_evidence - gp_evidence) < 1e-6  # measured <= 5e-8 (also O(1/N))
    np.testing.assert_allclose(est.info.u_mode, 1.0, atol=1e-5)


def test_adaptation_scales_as_one_over_width_across_the_quantile_switch():
    # N = 1e6 uses the exact chi^2 quantile map, N = 1e7 and 1e9 the Wilson-Hilferty map with the
    # density ratio (_t_of_x); N times the shift must agree (its own O(1/N) change is 1e-6 relative)
    X, Y, X_test = tiny_problem()
    shifts = []
    for N in (10**6, 10**7, 10**9):
        spec = linear_spec(2, N, kappa=0.05)
        est = linear_posterior_kernels(spec, X, Y, X_test)
        shifts.append(N * (est.kernels - ck.nngp_kernels(spec, X, X_test)))
    scale = np.max(np.abs(shifts[-1]))
    assert np.max(np.abs(shifts[0] - shifts[-1])) < 1e-4 * scale
    assert np.max(np.abs(shifts[1] - shifts[-1])) < 1e-4 * scale


def test_no_data_limit_is_the_prior_mean_which_is_the_nngp():
    # kappa -> infinity switches the likelihood off: E[C(l)] = NNGP exactly for linear phi at any N
    # (E u_l = 1); what is left is quadrature error (measured <= 2e-12 relative)
    X, Y, X_test = tiny_problem()
    for depth in (1, 2, 3):
        spec = linear_spec(depth, 10, kappa=1e12)
        est = linear_posterior_kernels(spec, X, Y, X_test)
        nngp = ck.nngp_kernels(spec, X, X_test)
        assert np.max(np.abs(est.kernels - nngp)) < 1e-9 * np.max(np.abs(nngp))
        np.testing.assert_allclose(est.info.u_mean, 1.0, atol=1e-9)


@pytest.mark.slow  # statistical validation: the 1/N approach over several widths (~12 s)
def test_shift_approaches_first_order_theory_as_one_over_width():
    # T15 is the O(1/N) term of the exact shift, so their relative difference must fall as 1/N
    # (measured 3.3e-3 -> 3.4e-4 (L = 1) and 4.8e-3 -> 4.9e-4 (L = 2) from N = 1e3 to 1e4 here;
    # 2.2e-2 -> 2.2e-3 and 5.3e-2 -> 5.4e-3 on MNIST 0 vs 3 with P = 30)
    X, Y, X_test = tiny_problem(seed=4, P=10, P_test=3, d=5)
    for depth in (1, 2):
        errors = []
        for N in (1000, 10000):
            spec = linear_spec(depth, N, kappa=0.1)
            nngp = ck.nngp_kernels(spec, X, X_test)
            exact = linear_posterior_kernels(spec, X, Y, X_test).kernels - nngp
            first = ck.perturbative_kernels(spec, X, Y, X_test).kernels - nngp
            errors.append(np.linalg.norm(exact[1:] - first[1:]) / np.linalg.norm(exact[1:]))
        assert 0.0 < errors[1] < 0.01
        assert 8.0 < errors[0] / errors[1] < 12.0, errors  # slope -1 on log-log axes


def test_log_evidence_matches_monte_carlo_over_prior_networks():
    X, Y, _ = tiny_problem(seed=2)
    spec = linear_spec(2, 5, kappa=0.2)
    est = linear_posterior_kernels(spec, X, Y)
    C = ck.sample_prior_kernels(spec, X, 40_000, key=7)
    log_w = log_gauss(C[:, -1], Y, spec.kappa)
    w = np.exp(log_w - log_w.max())
    mc = log_w.max() + np.log(w.mean())
    se = w.std() / (w.mean() * np.sqrt(len(w)))  # delta method for ln of a mean
    # 4 SE of the Monte Carlo mean (measured: -10.0660 against -10.0802 +- 0.0086, z = 1.6)
    assert abs(est.info.log_evidence - mc) < 4 * se, (est.info.log_evidence, mc, se)
    assert est.info.log_evidence_error < 1e-6


def test_training_block_does_not_depend_on_test_inputs():
    X, Y, X_test = tiny_problem()
    spec = linear_spec(3, 12)
    with_test = linear_posterior_kernels(spec, X, Y, X_test)
    without = linear_posterior_kernels(spec, X, Y)
    np.testing.assert_allclose(with_test.kernels[:, :6, :6], without.kernels, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(with_test.kernels, np.swapaxes(with_test.kernels, 1, 2))
    assert with_test.info.log_evidence == pytest.approx(without.info.log_evidence, abs=1e-10)


def test_bad_input():
    X, Y, X_test = tiny_problem()
    with pytest.raises(SpecError, match="activation"):
        linear_posterior_kernels(ck.NetworkSpec(depth=1, width=10, activation="erf"), X, Y)
    with pytest.raises(SpecError, match="n_out"):
        spec = ck.NetworkSpec(depth=1, width=10, activation="linear", n_out=2)
        linear_posterior_kernels(spec, X, np.stack([Y, Y], axis=1))
    with pytest.raises(InputError, match="n_quad"):
        linear_posterior_kernels(linear_spec(1, 10), X, Y, options=ck.Quadrature(n_quad=2))
    with pytest.raises(InputError, match="n_quad"):
        linear_posterior_kernels(linear_spec(1, 10), X, Y, options=ck.Quadrature(n_quad=151))
    with pytest.raises(InputError, match=r"options: expected Quadrature\(\.\.\.\)"):
        linear_posterior_kernels(linear_spec(1, 10), X, Y, options=ck.PriorImportance())


def test_too_coarse_quadrature_is_a_failure_result():
    X, Y, X_test = tiny_problem()
    spec = linear_spec(3, 3, kappa=0.05)
    est = linear_posterior_kernels(spec, X, Y, X_test, options=ck.Quadrature(n_quad=3), throw=False)
    assert est.result is Result.quadrature_inaccurate and not est.ok
    assert "n_quad" in est.message and est.info.quad_error > 1e-6
    assert np.all(np.isfinite(est.kernels))
    with pytest.raises(ConvergenceError, match="n_quad") as err:
        linear_posterior_kernels(spec, X, Y, X_test, options=ck.Quadrature(n_quad=3))
    assert err.value.estimate.result is Result.quadrature_inaccurate
    # the same problem passes with enough nodes, or with a looser tolerance
    assert linear_posterior_kernels(spec, X, Y, X_test, options=ck.Quadrature(n_quad=3, rtol=1.0)).ok
