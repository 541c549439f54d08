"""Tempered SMC from the saddle point's measure to the posterior (smc.py, THEORY section 8).

References share nothing with the tempered path: the exact T18 posterior of linear networks
(Gauss-Hermite over the chi^2 scalars), the importance-weighted exact posterior of prior networks for
erf (`exact_posterior_kernels`), and long weight-space HMC (slow tier). The SMC's standard error comes
from 8 independent runs, so z = (SMC - reference) / SE follows roughly a Student t with 7 degrees of
freedom: its RMS over many entries is ~1.2, and 4 is a two-sided p ~ 0.5 % bound for one number.
"""

import dataclasses
import re

import numpy as np
import pytest
from conftest import MNIST

import critical_kernels as ck
from critical_kernels.errors import InputError
from critical_kernels.estimators.base import Result
from critical_kernels.estimators.preactivation import Preactivation, input_rank
from critical_kernels.metrics import cka_layers, cka_layers_se

ALWAYS = ck.Reweighting(
    rtol=None, tempering=ck.TemperedSMC(n_particles=64, n_runs=8, n_final=10, always=True)
)


@pytest.fixture(scope="module")
def mnist8():
    return ck.datasets.mnist_binary((0, 3), path=MNIST, n_train=8, n_test=2, seed=0)


def _z(est, reference, se_ref=0.0):
    return (est.kernels - reference)[1:] / np.sqrt(est.se**2 + se_ref**2)[1:]


@pytest.mark.slow
def test_linear_smc_matches_exact_posterior(mnist8):
    d = mnist8
    spec = ck.NetworkSpec(depth=2, width=20, activation="linear", g_w=1.0, g_b=0.1, kappa=0.1)
    saddle = ck.solve_map(spec, d.X, d.Y, d.X_test)  # linear: exact Gaussian tilted averages, no rtol
    est = ck.reweighted_kernels(spec, d.X, d.Y, d.X_test, options=ALWAYS, saddle=saddle, key=3)
    exact_est = ck.linear_posterior_kernels(spec, d.X, d.Y, d.X_test)
    exact = exact_est.kernels
    assert (
        est.ok and est.method.label == "tempered SMC" and len(est.info.smc_runs) == 8 and est.fallback is None
    )
    for run in est.info.smc_runs:  # a ladder from q (beta = 0) to the posterior (beta = 1)
        assert run.temperatures[0] == 0 and run.temperatures[-1] == 1 and run.reached
        assert np.all(np.diff(run.temperatures) > 0) and run.final_ess > 0.3 * 64
    z, z_map = _z(est, exact), _z(est, saddle.kernels)
    print("RMS z", np.sqrt(np.mean(z**2)), "max", np.abs(z).max(), "MAP RMS z", np.sqrt(np.mean(z_map**2)))
    # t_7 entries: RMS ~1.2 (measured 1.31, max 4.0 of 110 entries); the MAP: RMS 5.6
    assert np.sqrt(np.mean(z**2)) < 2.0
    assert np.sqrt(np.mean(z_map**2)) > 4.0
    cka_z = (cka_layers(est.kernels, d.Y) - cka_layers(exact, d.Y))[1:] / cka_layers_se(
        est.estimates.kernels, d.Y, kind="jackknife"
    )[1:]
    assert np.all(np.abs(cka_z) < 4.0), cka_z
    _check_predictive(est.predictive, exact_est.predictive)


def _check_predictive(smc, reference):
    """The posterior predictive of f* on the test rows (T21): each run's mean over its particles, the
    jackknife over runs; 4 SE (t_7) for the mean and the variance of each test row (measured z of the
    mean -2.4, -0.7 and of the variance 0.7, -0.3 on the linear case; 0.5, 0.7 and 0.4, 1.3 on erf)."""
    assert smc.kind == "jackknife" and smc.means.shape == (8,) + smc.mean.shape
    for value, se, ref, ref_se in (
        (smc.mean, smc.mean_se, reference.mean, reference.mean_se),
        (smc.var, smc.var_se, reference.var, reference.var_se),
    ):
        z = (value - ref) / np.sqrt(se**2 + (0.0 if ref_se is None else ref_se) ** 2)
        print("predictive z", z.ravel())
        assert np.all(np.abs(z) < 4.0), z


@pytest.mark.slow
def test_erf_smc_matches_exact_posterior():
    # layer 1 keeps its weights (P' = 8 > d = 4), layer 2 takes pre-activations: both forms of q's density
    d = ck.datasets.xor(n_train=6, n_test=2, dim=4, seed=0)
    spec = ck.NetworkSpec(depth=2, width=20, activation="erf", g_w=1.5, g_b=0.1, kappa=0.1)
    assert Preactivation(spec, 4, 8).preactivation_layers == (False, True)
    exact = ck.exact_posterior_kernels(
        spec, d.X, d.Y, d.X_test, options=ck.PriorImportance(n_samples=2**17), key=5
    )
    est = ck.reweighted_kernels(spec, d.X, d.Y, d.X_test, options=ALWAYS, key=1)
    assert est.ok
    z = _z(est, exact.kernels, exact.se)
    print("RMS z", np.sqrt(np.mean(z**2)), "max", np.abs(z).max())
    assert np.sqrt(np.mean(z**2)) < 2.0  # measured 1.32, max 2.5 of 128 entries
    _check_predictive(est.predictive, exact.predictive)


@pytest.mark.slow
def test_smc_on_unstandardised_xor_matches_long_hmc():
    # issue 13: raw XOR inputs (input kernel scale 0.24), P = 30, N = 100, L = 2, erf, g_w = 1.5, g_b = 0.1,
    # kappa = 0.1. Plain reweighting from the saddle point has ESS ~1 of 2048 (Var R ~ 14) here.
    data = ck.datasets.xor(n_train=30, n_test=0, seed=0, standardise=False)
    spec = ck.NetworkSpec(depth=2, width=100, activation="erf", g_w=1.5, g_b=0.1, kappa=0.1)
    hmc = ck.sample_posterior(
        spec, data.X, data.Y, sampler=ck.HMC(), chains=ck.Chains(warmup=1000, n_samples=4000), key=5
    )
    smc = ck.reweighted_kernels(spec, data.X, data.Y, options=ck.Reweighting(rtol=None, n_samples=512), key=0)
    assert smc.ok and smc.method.label == "tempered SMC" and smc.info.ess < 50
    assert all(r.reached and len(r.temperatures) <= 12 for r in smc.info.smc_runs)
    nngp = cka_layers(ck.nngp_kernels(spec, data.X), data.Y)[1:]
    c_hmc, c_smc = cka_layers(hmc.kernels, data.Y)[1:], cka_layers(smc.kernels, data.Y)[1:]
    se = np.hypot(
        cka_layers_se(hmc.estimates.kernels, data.Y)[1:],
        cka_layers_se(smc.estimates.kernels, data.Y, kind="jackknife")[1:],
    )
    miss = (c_smc - c_hmc) / (c_hmc - nngp)
    print("SMC", c_smc, "HMC", c_hmc, "miss / adaptation", miss, "z", (c_smc - c_hmc) / se)
    # the criterion, per layer: within 5 % of the adaptation or 2 combined SE
    # (measured: CKA 0.01983 / 0.06079 against HMC 0.01986 / 0.06033, miss -1.0 % / +1.5 % of the
    # adaptation, z -0.3 / 1.7; plain reweighting from the same saddle point: 0.0201 / 0.0702, ESS 1)
    assert np.all((np.abs(miss) < 0.05) | (np.abs(c_smc - c_hmc) < 2 * se))


def test_auto_tempering_replaces_a_collapsed_reweighting(mnist8):
    d = mnist8
    spec = ck.NetworkSpec(depth=1, width=20, activation="linear", g_w=1.0, g_b=0.1, kappa=0.1)
    saddle = ck.solve_map(spec, d.X, d.Y)  # linear: exact Gaussian tilted averages, no rtol
    # min_ess_count above the number of networks: plain reweighting always "collapses"
    tiny = ck.TemperedSMC(n_particles=16, n_runs=2, n_mcmc=2, n_leapfrog=4, n_final=2)  # plumbing only
    options = ck.Reweighting(
        rtol=None, n_samples=64, min_ess_count=65, tempering=tiny
    )  # "auto": temper when the ESS is low
    common = dict(saddle=saddle, key=0, throw=False)
    plain = ck.reweighted_kernels(
        spec, d.X, d.Y, options=dataclasses.replace(options, tempering=None), **common
    )
    assert plain.result is Result.ess_collapsed and plain.method.label == "importance"
    assert plain.fallback is None
    auto = ck.reweighted_kernels(spec, d.X, d.Y, options=options, **common)
    assert auto.ok and auto.method.label == "tempered SMC"
    assert auto.info.ess == plain.info.ess and auto.info.n_samples == 64  # the plain attempt is reported
    assert auto.fallback == (
        options,  # the plain reweighting, abandoned, and why
        f"ESS {plain.info.ess:.3g} < min_ess_count = 65 of 64 networks "
        f"(Var R = {plain.info.var_log_weight:.3g})",
    )
    assert len(auto.info.smc_runs) == 2 and auto.estimates.kernels.shape == (2, 2, 8, 8)
    assert auto.estimates.kind == "jackknife"


def test_preactivation_blocks_round_trip():
    spec = ck.NetworkSpec(depth=3, width=6, activation="erf", g_b=0.1)
    model = Preactivation(spec, d=4, n_rows=5)  # layer 1 keeps weights (5 > 4), layers 2-3 pre-activations
    u = np.random.default_rng(0).normal(size=model.dim)
    blocks = model.blocks(u)
    assert [b.shape for b in blocks] == [(5, 6), (5, 6), (5, 6)]
    np.testing.assert_array_equal(model.pack(blocks), u)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_runs=1), "n_runs"),
        (dict(target_ess=1.0), "target_ess"),
        (dict(n_particles=0), "n_particles"),
        (dict(step_size=-0.1), "step_size"),
    ],
)
def test_bad_smc_options(kwargs, match):
    with pytest.raises(InputError, match=match):
        ck.TemperedSMC(**kwargs)


def test_bad_tempering_mode(mnist8):
    spec = ck.NetworkSpec(depth=1, width=20, activation="linear")
    with pytest.raises(InputError, match="tempering"):
        ck.Reweighting(rtol=None, tempering="sometimes")
    with pytest.raises(InputError, match="tempering: must be TemperedSMC"):
        ck.Reweighting(rtol=None, tempering={"n_particles": 10})
    with pytest.raises(InputError, match="options: expected Reweighting"):
        ck.reweighted_kernels(spec, mnist8.X, mnist8.Y, options=ck.TemperedSMC())


@pytest.mark.slow
def test_auto_tempering_recovers_a_sharp_linear_posterior(mnist8):
    # kappa = 0.01, N = 10: plain reweighting keeps ESS ~17 of 256 networks (Var R ~ 400); "auto" moves
    # to tempered SMC, which must land on the exact T18 posterior (measured: 4 temperature steps per
    # run, RMS z 1.0 over the 200 entries, captured 0.994 / 0.995 of the exact CKA adaptation)
    d = mnist8
    spec = ck.NetworkSpec(depth=2, width=10, activation="linear", g_w=1.0, g_b=0.1, kappa=0.01)
    est = ck.reweighted_kernels(
        spec, d.X, d.Y, d.X_test, options=ck.Reweighting(rtol=None, n_samples=256, n_batches=8)
    )
    assert est.method.label == "tempered SMC" and est.info.ess < 50
    exact = ck.linear_posterior_kernels(spec, d.X, d.Y, d.X_test).kernels
    z = _z(est, exact)
    assert np.sqrt(np.mean(z**2)) < 2.0, np.sqrt(np.mean(z**2))


def test_layer_one_keeps_its_weights_where_the_input_kernel_is_singular():
    # issue 23: with 560 MNIST rows C0 is singular (blank pixels: rank X < 784), so pre-activations of
    # layer 1 (chol C0 = NaN) made every log weight NaN. The rule now reads the rank of C0, not d.
    X = np.random.default_rng(0).normal(size=(7, 8))
    X[:, :2] = 0.0  # two blank "pixels": rank 6 < P' = 7 <= d = 8
    spec = ck.NetworkSpec(depth=2, width=20, activation="erf", g_b=0.0)
    rank = input_rank(spec, X)
    assert rank == 6 and input_rank(spec.replace(g_b=0.1), X) == 7  # a bias adds the all-ones direction
    assert Preactivation(spec, 8, 7).preactivation_layers == (True, True)  # d alone would say True
    assert Preactivation(spec, 8, 7, rank).preactivation_layers == (False, True)


def test_non_finite_log_weights_stop_the_ladder_with_a_reason(mnist8):
    # a tilt that overflows (C~ = 1e300) gives every initial particle R = NaN; before, blackjax read
    # them as equal weights and jumped from beta = 0 to 1 with NaN weights (issue 23)
    d = mnist8
    spec = ck.NetworkSpec(depth=2, width=10, activation="erf", g_w=1.5, g_b=0.1, kappa=0.1)
    saddle = ck.solve_map(spec, d.X, d.Y, tilted=ck.SecondCumulant(n_samples=256, replicas=0, rtol=None))
    huge = dataclasses.replace(
        saddle, info=saddle.info._replace(conj_kernels=np.full_like(saddle.info.conj_kernels, 1e300))
    )
    smc = ck.TemperedSMC(n_particles=8, n_runs=2, n_mcmc=1, n_leapfrog=2, n_final=1, n_w=16, always=True)
    est = ck.reweighted_kernels(
        spec, d.X, d.Y, options=ck.Reweighting(rtol=None, tempering=smc), saddle=huge, throw=False
    )
    assert not est.ok and np.isnan(est.kernels[1:]).all()
    assert "non-finite log weight R" in est.message and re.search(r"\d of 8 initial particles", est.message)
    assert all(not r.reached and len(r.temperatures) == 1 for r in est.info.smc_runs)
