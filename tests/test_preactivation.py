"""The pre-activation (function-space) sampler (T19) against independent references.

Fast tier: the log density and test predictor against a NumPy forward pass with the readout integrated
by Monte Carlo; the prior law of the kernels against i.i.d. weight-space prior networks; deep linear
posteriors against the exact T18 posterior. Slow tier: erf posteriors against the weight-space sampler.
Power: drawing the pre-activations with a 5 % too large variance (chol(1.05 C)) fails every fast
log-density and prior-law case (measured |z| up to 5.8 and 9.6). Tolerances: kernel entries within
4 standard errors (the maximum over up to ~110 correlated entries: a two-sided 4 sigma bound leaves a
family-wise false-alarm rate below ~1 %, Bonferroni 6e-5 per entry, as in test_reweighted), CKA
within 3 standard errors per layer (2 layers: family-wise < 1 %).
"""

import numpy as np
import pytest
from conftest import MNIST
from reference import PHI
from scipy.stats import multivariate_normal

import critical_kernels as ck
from critical_kernels.estimators import Network, Preactivation, sample_posterior
from critical_kernels.metrics import cka_layers, cka_layers_se


def test_layer_forms_and_dimension():
    mnist = ck.NetworkSpec(depth=2, width=100, activation="erf", g_w=1.5, g_b=0.1)
    # MNIST (d = 784), P' = 130: layer 1 pre-activations (130 <= 784), layer 2 weights (130 > N = 100)
    model = Preactivation(mnist, 784, 130)
    assert model.preactivation_layers == (True, False)
    assert model.dim == 130 * 100 + (100 * 100 + 100) < Network(mnist, 784).dim == 88_701
    assert Preactivation(mnist, 784, 50).preactivation_layers == (True, True)
    # a linear layer's kernel has rank <= every fan-in below it: d = 4 caps layer 2 as well
    linear = mnist.replace(activation="linear", width=20)
    assert Preactivation(linear, 4, 8).preactivation_layers == (False, False)
    assert Preactivation(linear.replace(activation="erf"), 4, 8).preactivation_layers == (False, True)


@pytest.mark.parametrize("dim", [2, 6])  # layer 1 in weight form (P' = 4 > d = 2) or pre-activations
def test_log_density_and_predictor_integrate_the_readout(dim):
    """Against a NumPy forward pass in which the readout is not integrated analytically but by Monte
    Carlo over prior readouts w: p(Y | h) = E_w N(Y; f(w), kappa), E[f_test | h, Y] by importance
    weights N(Y; f(w), kappa)."""
    d = ck.datasets.xor(n_train=3, n_test=1, dim=dim, seed=0)
    spec = ck.NetworkSpec(depth=2, width=5, activation="erf", g_w=1.5, g_b=[0.1, 0.2, 0.3], kappa=0.5)
    X, Y = np.concatenate([d.X, d.X_test]), d.Y.reshape(-1, 1)
    model = Preactivation(spec, dim, 4)
    assert model.preactivation_layers == (dim >= 4, True)
    rng = np.random.default_rng(1)
    for _ in range(2):  # two parameter points
        u = rng.standard_normal(model.dim)
        if dim >= 4:  # h1 = chol(C0) z1
            C0 = X @ X.T / dim + 0.1
            h1, rest = np.linalg.cholesky(C0) @ u[:20].reshape(4, 5), u[20:]
        else:  # whitened weights (d, N) then biases (N,), as Network stores them
            h1 = X @ u[:10].reshape(2, 5) / np.sqrt(dim) + np.sqrt(0.1) * u[10:15]
            rest = u[15:]
        C1 = 1.5 / 5 * PHI["erf"](h1) @ PHI["erf"](h1).T + 0.2
        h2 = np.linalg.cholesky(C1) @ rest.reshape(4, 5)
        # readout: f = sqrt(g/N) phi(h2) w + sqrt(g_b) w_b, w ~ N(0, I); 400k prior draws
        A = np.hstack([np.sqrt(1.5 / 5) * PHI["erf"](h2), np.full((4, 1), np.sqrt(0.3))])
        f = rng.standard_normal((400_000, 6)) @ A.T
        like = multivariate_normal(mean=np.zeros(3), cov=0.5 * np.eye(3)).pdf(Y[:, 0] - f[:, :3])
        mean, se = like.mean(), like.std() / np.sqrt(len(like))
        expected = -0.5 * u @ u + np.log(mean)
        got = float(model.log_density(u, X, Y))
        print(f"d = {dim}: ln p z {(got - expected) / (se / mean):.2f}", end="; ")
        # 4 Monte Carlo SE of ln p (delta method: se / mean), measured |z| < 1.5
        assert abs(got - expected) < 4 * se / mean, (got, expected, se / mean)
        assert float(model.log_density(u, X, Y, prior=True)) == pytest.approx(-0.5 * u @ u, rel=1e-12)
        w = like / like.sum()  # self-normalised importance weights
        f_test = np.sum(w * f[:, 3])
        f_se = np.sqrt(np.sum(w**2 * (f[:, 3] - f_test) ** 2))
        f_z = (float(model.test_outputs(u, X, Y)[0, 0]) - f_test) / f_se
        print(f"f_test z {f_z:.2f}")
        assert abs(f_z) < 4.0  # 4 SE of the self-normalised importance-sampling mean
        C2 = 1.5 / 5 * PHI["erf"](h2) @ PHI["erf"](h2).T + 0.3
        np.testing.assert_allclose(np.asarray(model.kernels(u, X)), [C1, C2], rtol=1e-10)


@pytest.mark.slow  # statistical validation (many independent replicas)
@pytest.mark.parametrize("dim", [4, 6])  # P' = 5: layer 1 weights (d = 4) or pre-activations (d = 6)
def test_prior_law_of_the_kernels_matches_weight_space(dim):
    """The kernels of i.i.d. prior draws in both parameterisations have the same law (T19: the weights
    are integrated out exactly). Two-sample z of the mean of C and of C^2 per entry, every layer:
    this includes the O(1/N) shift and the 1/N fluctuations of the deep layer (N = 8)."""
    import jax

    d = ck.datasets.xor(n_train=3, n_test=2, dim=dim, seed=0)
    spec = ck.NetworkSpec(depth=2, width=8, activation="erf", g_w=2.0, g_b=0.1)
    X = np.concatenate([d.X, d.X_test])
    n = 40_000
    draws = []
    for model, key in ((Preactivation(spec, dim, 5), 0), (Network(spec, dim), 1)):
        u = jax.random.normal(jax.random.PRNGKey(key), (n, model.dim))
        C = np.asarray(jax.jit(jax.vmap(lambda v, m=model: m.kernels(v, X)))(u))
        draws.append(np.concatenate([C, C**2], axis=1))  # (n, 2L, P', P')
    (a, b) = draws
    z = (a.mean(0) - b.mean(0)) / np.sqrt((a.var(0) + b.var(0)) / n)
    iu = np.triu_indices(5)
    z = z[:, iu[0], iu[1]]  # 4 x 15 distinct entries
    z1 = (a[:, 0].mean(0) - ck.nngp_kernels(spec, X)[1]) / np.sqrt(a[:, 0].var(0) / n)  # E C1 = NNGP
    print(f"d = {dim}: max |z| two-sample {np.abs(z).max():.2f}, layer 1 vs NNGP {np.abs(z1).max():.2f}")
    assert np.abs(z).max() < 4.0, np.abs(z).max()  # measured max |z| ~2.5
    assert np.abs(z1).max() < 4.0, np.abs(z1).max()


@pytest.fixture(scope="module")
def mnist8():
    return ck.datasets.mnist_binary((0, 3), path=MNIST, n_train=8, n_test=2, seed=0)


@pytest.mark.slow  # statistical validation: 4 chains of HMC against the exact posterior (T18)
@pytest.mark.parametrize("case", ["mnist", "xor"])
def test_linear_posterior_matches_exact(case, mnist8):
    """Deep linear network (L = 2, N = 10): the exact T18 posterior. MNIST (d = 784): both layers in
    pre-activation form; XOR (d = 4 < P' = 10): both in weight form, only the readout integrated."""
    d = mnist8 if case == "mnist" else ck.datasets.xor(n_train=8, n_test=2, dim=4, seed=0)
    spec = ck.NetworkSpec(depth=2, width=10, activation="linear", g_w=1.0, g_b=0.1, kappa=0.1)
    # batches of 400 steps: with 100 (n_samples 1000) the batch means are correlated and the MCSE of
    # the entries ran up to 1.8 times too small (mean z^2 3.5 on XOR for some keys)
    chains = ck.Chains(chains=4, warmup=200, n_samples=4000, thin=5)
    est = sample_posterior(
        spec, d.X, d.Y, d.X_test, sampler=ck.HMC(space="preactivation"), chains=chains, key=0
    )
    assert est.ok and est.info.sampler.space == "preactivation" and est.kernels.shape == (3, 10, 10)
    assert est.method.label == "HMC, pre-activations"
    exact = ck.linear_posterior_kernels(spec, d.X, d.Y, d.X_test).kernels
    np.testing.assert_allclose(est.kernels[0], exact[0], atol=1e-12)
    z = (est.kernels - exact)[1:] / est.se[1:]
    cka_se = cka_layers_se(est.estimates.kernels, d.Y)[1:]
    z_cka = (cka_layers(est.kernels, d.Y) - cka_layers(exact, d.Y))[1:] / cka_se
    nngp = ck.nngp_kernels(spec, d.X, d.X_test)
    z_nngp = (cka_layers(nngp, d.Y) - cka_layers(exact, d.Y))[1:] / cka_se
    print(f"{case}: max |z| entries {np.abs(z).max():.2f}, CKA z {z_cka}, NNGP CKA z {z_nngp}")
    # batch-means MCSE from 40 batches: mean z^2 over the entries measured 0.3-2.2 over 8 keys (XOR),
    # max |z| up to 4.5 (t-like tails, correlated entries); a biased sampler gives z^2 >> 3
    assert (z**2).mean() < 3.0 and np.abs(z).max() < 5.5, ((z**2).mean(), np.abs(z).max())
    assert np.all(np.abs(z_cka) < 3.0)  # measured |z| 0.3-1.1
    # power: the prior (NNGP) kernels are rejected, measured 31 / 31 (MNIST) and 5.2 / 7.6 (XOR) CKA SE off
    assert np.all(np.abs(z_nngp) > {"mnist": 10.0, "xor": 4.0}[case])


def test_unknown_space_and_singular_kernels_are_named():
    X, Y = np.arange(6.0).reshape(3, 2), np.ones(3)
    spec = ck.NetworkSpec(depth=1, width=5, g_b=0.1)
    with pytest.raises(ck.InputError, match="space: must be one of 'weights', 'preactivation'"):
        sample_posterior(spec, X, Y, sampler=ck.MALA(space="function"))
    x, y = np.random.default_rng(0).standard_normal((2, 8))
    short = ck.Chains(n_samples=100, n_batches=2)
    # identical inputs: C0 has rank 1, so layer 1 keeps its weights (input_rank) and sampling runs
    same = sample_posterior(
        spec, np.stack([x, x, x]), Y, sampler=ck.MALA(space="preactivation"), chains=short
    )
    assert np.all(np.isfinite(same.kernels))
    # x and -x, erf, no biases: C_emp(1) is singular, and layer 2's pre-activations have no density
    odd = ck.NetworkSpec(depth=2, width=5, g_b=0.0)
    with pytest.raises(ck.NotPositiveDefiniteError, match=r"space='weights'"):
        sample_posterior(odd, np.stack([x, -x, y]), Y, sampler=ck.MALA(space="preactivation"), chains=short)


def _agreement(data, spec, steps):
    """Both spaces with HMC; per layer the CKA difference over its combined batch-means SE."""
    out = {}
    for space in ("preactivation", "weights"):
        chains = ck.Chains(chains=4, warmup=500, n_samples=steps[space], thin=steps[space] // 500)
        est = sample_posterior(
            spec, data.X, data.Y, data.X_test, sampler=ck.HMC(space=space), chains=chains, key=0
        )
        assert est.ok, est.message
        out[space] = (cka_layers(est.kernels, data.Y), cka_layers_se(est.estimates.kernels, data.Y))
    (c_pre, se_pre), (c_w, se_w) = out["preactivation"], out["weights"]
    z = (c_pre - c_w)[1:] / np.sqrt(se_pre**2 + se_w**2)[1:]
    return z, c_pre, c_w, se_pre, se_w


@pytest.mark.slow
@pytest.mark.parametrize("case", ["xor", "mnist"])
def test_erf_posterior_agrees_with_weight_space(case):
    """erf, L = 2: the same posterior in both parameterisations, CKA per layer within 3 combined SE.
    XOR (d = 4): layer 1 in weight form, layer 2 pre-activations; MNIST 0 vs 3: both pre-activations."""
    if case == "xor":
        data = ck.datasets.xor(n_train=12, n_test=4, dim=4, seed=0)
        steps = {"preactivation": 5000, "weights": 10_000}  # ~80 s in all on 2 busy cores
    else:  # weight-space steps are dearer here (d = 784): fewer steps, SE ~1.5x larger
        data = ck.datasets.mnist_binary((0, 3), path=MNIST, n_train=12, n_test=4, seed=0)
        steps = {"preactivation": 3000, "weights": 4000}  # ~140 s in all
    spec = ck.NetworkSpec(depth=2, width=30, activation="erf", g_w=1.5, g_b=0.1, kappa=0.1)
    z, c_pre, c_w, se_pre, se_w = _agreement(data, spec, steps)
    print(f"{case}: CKA pre {c_pre} +- {se_pre}, weights {c_w} +- {se_w}, z {z}")
    assert np.all(np.abs(z) < 3.0), z  # measured z 0.40 / -0.57 (XOR), -0.16 / -1.04 (MNIST)
