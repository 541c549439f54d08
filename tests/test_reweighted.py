"""Saddle-point importance sampling (T17) against independent references.

Linear networks: the exact T18 posterior (`linear_posterior_kernels`, Gauss-Hermite over the L chi^2
scalars; no sampling, no saddle point). erf: the importance-weighted exact posterior of prior networks
(`exact_posterior_kernels`), which shares nothing with the tilted chain. Tolerance: every kernel entry
within 4 standard errors. With ~100-200 correlated entries per test, a two-sided 4 sigma bound leaves
a family-wise false-alarm rate of at most ~1 % (Bonferroni, 6e-5 per entry) while still rejecting the
MAP kernels (measured 9-13 SE off in the linear cases below).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import MNIST

import critical_kernels as ck
from critical_kernels.errors import ConvergenceError, InputError
from critical_kernels.estimators.base import Result
from critical_kernels.estimators.linear_exact import linear_posterior_kernels
from critical_kernels.estimators.reweighted import _proposal_saddle, reweighted_kernels


@pytest.fixture(scope="module")
def mnist8():
    return ck.datasets.mnist_binary((0, 3), path=MNIST, n_train=8, n_test=2, seed=0)


@pytest.mark.slow  # statistical validation: 16384 reweighted networks against the exact posterior
@pytest.mark.parametrize("depth", [1, 2])
def test_linear_matches_exact_posterior_and_rejects_map(mnist8, depth):
    d = mnist8
    spec = ck.NetworkSpec(depth=depth, width=20, activation="linear", g_w=1.0, g_b=0.1, kappa=0.1)
    saddle = ck.solve_map(spec, d.X, d.Y, d.X_test)  # linear: exact Gaussian tilted averages, no rtol
    options = ck.Reweighting(rtol=None, n_samples=16384, n_batches=32, batch_size=512)
    est = reweighted_kernels(spec, d.X, d.Y, d.X_test, options=options, saddle=saddle, key=1)
    exact = linear_posterior_kernels(spec, d.X, d.Y, d.X_test).kernels
    assert est.ok and est.kernels.shape == (depth + 1, 10, 10)
    np.testing.assert_allclose(est.kernels[0], exact[0], atol=1e-12)
    z = (est.kernels - exact)[1:] / est.se[1:]
    z_map = (saddle.kernels - exact)[1:] / est.se[1:]
    # measured max|z|: 2.6 (L = 1), 2.5 (L = 2); the MAP: 9.4 and 13 standard errors off, its largest
    # miss 3.1x and 5.9x the reweighted one
    assert np.abs(z).max() < 4.0, np.abs(z).max()
    assert np.abs(z_map).max() > 6.0, np.abs(z_map).max()
    assert np.abs(saddle.kernels - exact).max() > 2 * np.abs(est.kernels - exact).max()
    assert est.info.ess > 1000 and np.all(est.info.acceptance == 1.0) and est.info.saddle_ok
    assert est.method.label == "importance" and est.fallback is None and est.estimates.kind == "jackknife"
    loo = est.estimates.kernels  # leave-one-batch-out estimates reproduce the jackknife SE
    assert loo.shape == (32, depth + 1, 10, 10)
    jack = np.sqrt(31 / 32 * ((loo - loo.mean(0)) ** 2).sum(0))
    np.testing.assert_allclose(jack, est.se, rtol=1e-10, atol=1e-12)


def _erf_check(depth, n_samples):
    d = ck.datasets.xor(n_train=6, n_test=2, dim=4, seed=0)
    spec = ck.NetworkSpec(depth=depth, width=20, activation="erf", g_w=1.5, g_b=0.1, kappa=0.1)
    exact = ck.exact_posterior_kernels(
        spec, d.X, d.Y, d.X_test, options=ck.PriorImportance(n_samples=2**17), key=5
    )
    est = reweighted_kernels(
        spec, d.X, d.Y, d.X_test, options=ck.Reweighting(rtol=None, n_samples=n_samples), key=1
    )
    assert est.ok and est.se is not None
    z = (est.kernels - exact.kernels)[1:] / np.sqrt(est.se**2 + exact.se**2)[1:]
    assert np.abs(z).max() < 4.0, np.abs(z).max()
    assert np.all((est.info.acceptance > 0.5) & (est.info.acceptance <= 1.0))
    # the posterior predictive of f* on the two test rows (T21), both with their own SEs
    a, b = est.predictive, exact.predictive
    z_mean = (a.mean - b.mean) / np.hypot(a.mean_se, b.mean_se)
    z_var = (a.var - b.var) / np.hypot(a.var_se, b.var_se)
    assert np.abs(z_mean).max() < 4.0 and np.abs(z_var).max() < 4.0, (z_mean, z_var)
    return est


@pytest.mark.slow  # statistical validation against 2^17 weighted networks
def test_erf_matches_exact_posterior_one_layer():
    est = _erf_check(1, 8192)  # measured max|z| 2.65, ESS 5960 of 8192, MH acceptance 0.86
    assert est.info.ess > 1000


@pytest.mark.slow
def test_erf_matches_exact_posterior_two_layers():
    _erf_check(2, 16384)


def test_sharp_likelihood_collapses_ess(mnist8):
    d = mnist8  # kappa = 0.01, N = 10: Var R ~ 400, one or two networks carry all the weight
    spec = ck.NetworkSpec(depth=2, width=10, activation="linear", g_w=1.0, g_b=0.1, kappa=0.01)
    options = ck.Reweighting(
        rtol=None, n_samples=256, n_batches=8, min_ess_count=50, tempering=None
    )  # (default: tempered SMC)
    est = reweighted_kernels(spec, d.X, d.Y, d.X_test, options=options, throw=False)
    assert est.result is Result.ess_collapsed and est.method.label == "importance" and est.fallback is None
    assert est.info.ess < 50
    # the advice is reweighting's own (networks needed, or the sampler), not the MAP's SecondCumulant
    assert (
        "networks" in est.message or "sample_posterior" in est.message
    ) and "SecondCumulant" not in est.message
    with pytest.raises(ConvergenceError) as err:
        reweighted_kernels(spec, d.X, d.Y, d.X_test, options=options)
    assert err.value.estimate.result is Result.ess_collapsed


def test_unconverged_saddle_is_a_failure_not_a_number(mnist8):
    d = mnist8
    spec = ck.NetworkSpec(depth=1, width=20, activation="linear", g_w=1.0, g_b=0.1, kappa=0.1)
    saddle = ck.solve_map(spec, d.X, d.Y, solver=ck.Anderson(max_steps=1), throw=False)
    assert not saddle.ok
    est = reweighted_kernels(spec, d.X, d.Y, saddle=saddle, throw=False)
    assert not est.ok and "saddle point" in est.message and np.isnan(est.kernels).all()
    assert not est.info.saddle_ok


@pytest.mark.slow  # three compiled shapes (~14 s); the padded path itself runs in every fast reweighted test
def test_saddle_on_training_rows_equals_the_one_with_test_rows(mnist8):
    """C~* vanishes on test rows and they leave its training block alone (linear: the exact MAP, to
    rounding), so a saddle solved without X_test gives the same networks and weights; one whose rows
    differ is refused, naming the shapes it accepts."""
    d = mnist8
    spec = ck.NetworkSpec(depth=1, width=20, activation="linear", g_w=1.0, g_b=0.1, kappa=0.1)
    with_test = ck.solve_map(spec, d.X, d.Y, d.X_test)
    train_only = ck.solve_map(spec, d.X, d.Y)
    np.testing.assert_allclose(with_test.info.conj_kernels[:, 8:, :], 0.0, atol=1e-14)
    options = ck.Reweighting(rtol=None, n_samples=32, n_batches=2)
    a, b = (
        reweighted_kernels(spec, d.X, d.Y, d.X_test, options=options, saddle=s, key=0)
        for s in (with_test, train_only)
    )
    np.testing.assert_allclose(a.kernels, b.kernels, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(a.predictive.mean, b.predictive.mean, rtol=1e-8)
    with pytest.raises(InputError, match=r"saddle: expected info.conj_kernels of shape \(2, 8, 8\)"):
        reweighted_kernels(spec, d.X, d.Y, options=options, saddle=with_test)  # solved with X_test


@pytest.mark.parametrize(
    "kwargs", [{"n_samples": 0}, {"n_samples": -5}, {"n_batches": 1}, {"n_samples": 2.5}, {"n_batches": 0}]
)
def test_bad_counts_raise_input_error(kwargs):
    d = ck.datasets.xor(n_train=6, n_test=0, dim=4, seed=0)
    spec = ck.NetworkSpec(depth=1, width=10, activation="linear", g_b=0.1, kappa=0.1)
    with pytest.raises(InputError):
        reweighted_kernels(spec, d.X, d.Y, options=ck.Reweighting(rtol=None, **kwargs))


def test_rtol_draws_rounds_until_the_se_meets_it_and_stays_exact(mnist8):
    """Reweighting.rtol (default 0.05): rounds of fresh networks until the jackknife SE of the CKA
    adaptation is at most rtol x the adaptation. Linear, L = 2, N = 20 (exact T18 answer). Without
    rtol: exactly n_samples; an easy rtol: met by the first round; rtol 0.02, from 256 networks: more rounds,
    met, and the pooled estimate stays within 4 SE of the exact kernels in every entry (the same
    Bonferroni argument as above); an rtol out of reach: stops at max_samples and says so."""
    d = mnist8
    spec = ck.NetworkSpec(depth=2, width=20, activation="linear", g_w=1.0, g_b=0.1, kappa=0.1)
    saddle = ck.solve_map(spec, d.X, d.Y, d.X_test)
    exact = linear_posterior_kernels(spec, d.X, d.Y, d.X_test).kernels
    run = lambda **kw: reweighted_kernels(  # noqa: E731
        spec,
        d.X,
        d.Y,
        d.X_test,
        options=ck.Reweighting(n_samples=256, batch_size=64, **kw),
        saddle=saddle,
        key=3,
    )
    fixed = run(rtol=None)
    assert fixed.info.n_samples == 256 and fixed.info.rtol_met is None
    easy = run(rtol=10.0)
    assert easy.info.n_samples == 256 and easy.info.rtol_met is True
    np.testing.assert_array_equal(easy.kernels, fixed.kernels)  # the first round is the fixed run
    grown = run(rtol=0.02, max_samples=16384)
    base = ck.cka_layers(ck.nngp_kernels(spec, d.X), d.Y)[1:]
    se = ck.metrics.cka_layers_se(grown.estimates.kernels, d.Y, kind="jackknife")[1:]
    adaptation = ck.cka_layers(grown.kernels, d.Y)[1:] - base
    assert grown.info.rtol_met is True and 256 < grown.info.n_samples <= 16384, grown.info.n_samples
    assert np.all(se <= 0.02 * np.maximum(np.abs(adaptation), 0.1 * np.abs(adaptation).max()))
    assert grown.info.n_samples % 16 == 0 and grown.estimates.kernels.shape[0] == 16
    z = (grown.kernels - exact)[1:] / grown.se[1:]
    assert np.abs(z).max() < 4.0, np.abs(z).max()
    # ln mean e^R estimates the exact evidence ln p(Y | X) of T18 (E_q e^R = p(Y | X) for linear phi);
    # its delta-method SE, 4 SE as above (the O(1/n) bias of the log, ~SE^2 / 2, is negligible)
    evidence = linear_posterior_kernels(spec, d.X, d.Y).info.log_evidence
    z_evidence = (grown.info.log_evidence - evidence) / grown.info.log_evidence_se
    assert 0 < grown.info.log_evidence_se < 0.1 and abs(z_evidence) < 4.0, z_evidence
    with pytest.warns(UserWarning, match="reweighted: the CKA adaptation's SE is above rtol = 1e-06"):
        capped = run(rtol=1e-6, max_samples=1024)
    assert capped.info.rtol_met is False and capped.info.n_samples == 1024 and capped.ok


@pytest.mark.slow  # statistical validation at P = 100: about 3 minutes on one core
def test_defaults_reach_five_percent_of_the_exact_adaptation_at_p100():
    """Deep linear net, MNIST 0 vs 3, P = 100, N = 333 (alpha = 0.3), L = 2, defaults (rtol 0.05):
    the SE of the CKA adaptation is at most 5 % of it in both layers, and the CKA lands within
    max(3 SE, 5 % of the adaptation) of the exact T18 answer. benchmarks/reweighted_se_linear.py
    measured the jackknife calibrated within 25 % at this size (spread / SE 0.80-1.25 over 24 keys), so 3 SE
    fails ~0.3 % of keys per layer by chance (2 SE, the issue's bound over many keys, ~5 %: key 0
    misses layer 1 by 2.1 SE); the benchmark holds the 2 SE statistics."""
    d = ck.datasets.mnist_binary((0, 3), path=MNIST, n_train=100, n_test=0, seed=0)
    spec = ck.NetworkSpec(depth=2, width=333, activation="linear", g_w=1.0, g_b=0.1, kappa=0.1)
    est = reweighted_kernels(spec, d.X, d.Y, key=0)
    exact = ck.cka_layers(linear_posterior_kernels(spec, d.X, d.Y).kernels, d.Y)[1:]
    base = ck.cka_layers(ck.nngp_kernels(spec, d.X), d.Y)[1:]
    cka = ck.cka_layers(est.kernels, d.Y)[1:]
    se = ck.metrics.cka_layers_se(est.estimates.kernels, d.Y, kind="jackknife")[1:]
    adaptation = np.abs(exact - base)
    assert est.ok and est.info.rtol_met and est.info.n_samples > 2048  # 2048 alone gave 7.7-8 %
    assert np.all(se <= 0.05 * np.abs(cka - base)), (se, cka - base)
    assert np.all(np.abs(cka - exact) <= np.maximum(3 * se, 0.05 * adaptation)), (cka - exact, se)


def test_the_neurons_chains_run_until_the_tilted_law_is_reached():
    """One training row, phi = identity: the tilted measure N(0, 1) exp(g a h^2) is N(0, 1 / (1 - 2 g a))
    in closed form. With g a = 0.2 (variance 5/3, a tail the N(0, 1) proposal reaches slowly) 20
    independence Metropolis-Hastings steps leave the variance 3.9 SE low (1e5 neurons, these keys);
    the length `_mh_length` picks from the tilt weights (150 steps here) lands within 3 SE (measured
    z -0.9). W~ by Monte Carlo against its closed form -ln(1 - 2 g a) / 2 within its O(1/M) error."""
    from critical_kernels.estimators.reweighted import MHSteps, _layer_mh

    a, n = 0.2, 100_000
    zw = jax.random.normal(jax.random.PRNGKey(3), (4096, 1))
    exact = 1.0 / (1.0 - 2.0 * a)
    z = {}
    for name, steps in (("fixed", MHSteps(20, 1e9, 20)), ("adaptive", MHSteps(20, 0.01, 2000))):
        h, _, W, _, _, ran = _layer_mh(lambda x: x, steps, jax.random.PRNGKey(1), jnp.ones((1, 1)),
                                       jnp.array([[a]]), 1.0, n, zw)  # fmt: skip
        v = np.asarray(h[:, 0]) ** 2
        z[name] = (v.mean() - exact) / (v.std() / np.sqrt(n))
        # 4096 points: SE sqrt((E e^(0.4 z^2) / (E e^(0.2 z^2))^2 - 1) / 4096) = 0.009; 3 SE
        assert abs(float(W) + 0.5 * np.log(1.0 - 2.0 * a)) < 0.027
    assert int(ran) > 20
    assert z["fixed"] < -3.0  # the test can fail: a short chain is detectably off
    assert abs(z["adaptive"]) < 3.0


@pytest.mark.slow  # two compilations of the chunk: ~15 s, over the fast tier's budget
def test_chains_cut_at_max_mh_are_flagged():
    """info.mh_steps says how long the longest chain of each layer ran; a chain stopped by max_mh
    before its bound warns (relu, XOR: the bound asks for about 20 steps here)."""
    data = ck.datasets.xor(n_train=10, n_test=0)
    spec = ck.NetworkSpec(depth=1, width=50, activation="relu", g_w=2.0, g_b=0.1)
    saddle = _proposal_saddle(spec, data.X, data.Y, 0)
    cut = ck.Reweighting(n_samples=64, n_batches=4, rtol=None, tempering=None, n_mh=5, max_mh=6)
    with pytest.warns(ck.errors.EstimateWarning, match="max_mh = 6"):
        est = reweighted_kernels(spec, data.X, data.Y, options=cut, saddle=saddle, throw=False)
    assert est.info.mh_steps.tolist() == [6]
    free = ck.Reweighting(n_samples=64, n_batches=4, rtol=None, tempering=None, n_mh=5)
    steps = reweighted_kernels(spec, data.X, data.Y, options=free, saddle=saddle, throw=False).info.mh_steps
    assert np.all(steps >= 5) and np.max(steps) > 6
