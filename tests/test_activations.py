"""Activation moments: closed forms vs quadrature vs Monte Carlo (three independent tiers)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import DPHI, PHI, mc_pair_moment

import critical_kernels as ck
from critical_kernels.activations import MOMENTS
from critical_kernels.numerics import arccos, arcsin

# (qa, qb, c) covering weak, strong, negative and near-perfect correlation
PAIRS = [(1.0, 1.0, 0.3), (0.5, 2.0, -0.7), (3.0, 0.2, 0.7), (1.2, 1.2, 1.19), (0.05, 4.0, 0.0)]


@pytest.mark.parametrize("rule", ["trapezoid", "hermite"])
@pytest.mark.parametrize("kind", MOMENTS)
def test_erf_closed_form_equals_quadrature(kind, rule):
    act = ck.get_activation("erf", quad_degree=120, quad_rule=rule)
    qa, qb, c = (np.array(v) for v in zip(*PAIRS, strict=True))
    closed = np.asarray(act.pair_moment(kind, qa, qb, c))
    quad = np.asarray(act.pair_moment(kind, qa, qb, c, quadrature=True))
    np.testing.assert_allclose(closed, quad, rtol=1e-8, atol=1e-12)  # issue 2: rtol 1e-8
    q = np.array([0.01, 0.5, 1.0, 2.0])  # the rule converges slowly for sharp phi' at q >> 1
    np.testing.assert_allclose(
        act.self_moment(kind, q), act.self_moment(kind, q, quadrature=True), rtol=1e-8, atol=1e-12
    )


@pytest.mark.parametrize("name", ["erf", "relu", "linear", "tanh", "gelu"])
@pytest.mark.parametrize("qa, qb, c", PAIRS[:3])
def test_pp_moment_matches_monte_carlo(name, qa, qb, c):
    act = ck.get_activation(name)
    ours = float(act.pair_moment("pp", qa, qb, c))
    mc, se = mc_pair_moment(PHI[name], PHI[name], qa, qb, c)
    assert abs(ours - mc) < 4 * se  # 4 Monte Carlo standard errors, 2e6 samples


@pytest.mark.parametrize("name", ["erf", "relu", "linear", "tanh"])
def test_dd_moment_matches_monte_carlo(name):
    act = ck.get_activation(name)
    qa, qb, c = 0.8, 1.5, -0.4
    mc, se = mc_pair_moment(DPHI[name], DPHI[name], qa, qb, c, seed=1)
    assert abs(float(act.pair_moment("dd", qa, qb, c)) - mc) < 4 * se + 1e-15


def test_relu_second_derivative_moment_by_prices_theorem():
    # <delta(h_a) relu(h_b)> = 2 d/dqa <relu relu>: central differences of the MC-validated closed form
    act = ck.get_activation("relu")
    qa, qb, c, eps = 1.3, 0.7, 0.2, 1e-6
    fd = (act.pair_moment("pp", qa + eps, qb, c) - act.pair_moment("pp", qa - eps, qb, c)) / eps
    np.testing.assert_allclose(act.pair_moment("d2p", qa, qb, c), fd, rtol=1e-7)


def test_user_callable_uses_autodiff_and_quadrature():
    custom = ck.get_activation(lambda x: jnp.tanh(x))
    builtin = ck.get_activation("tanh")
    x = jnp.linspace(-3, 3, 13)
    np.testing.assert_allclose(custom.d1(x), builtin.d1(x), rtol=1e-13)
    np.testing.assert_allclose(custom.d2(x), builtin.d2(x), rtol=1e-12, atol=1e-14)
    for kind in MOMENTS:
        np.testing.assert_allclose(
            custom.pair_moment(kind, 0.9, 1.1, 0.4),
            builtin.pair_moment(kind, 0.9, 1.1, 0.4),
            rtol=1e-12,
        )


def test_quadrature_degree_is_configurable_and_converges():
    coarse = float(
        ck.get_activation("erf", quad_degree=4, quad_rule="hermite").pair_moment(
            "pp", 2.0, 2.0, 1.5, quadrature=True
        )
    )
    fine = float(
        ck.get_activation("erf", quad_degree=60, quad_rule="hermite").pair_moment(
            "pp", 2.0, 2.0, 1.5, quadrature=True
        )
    )
    exact = float(ck.get_activation("erf").pair_moment("pp", 2.0, 2.0, 1.5))
    assert abs(fine - exact) < 1e-10 < abs(coarse - exact)


def test_fast_arcsin_is_double_precision():
    x = np.linspace(-1.0, 1.0, 400_001)
    assert np.max(np.abs(np.asarray(arcsin(x)) - np.arcsin(x))) < 1e-15  # measured 4.4e-16
    assert np.max(np.abs(np.asarray(arccos(x)) - np.arccos(x))) < 1e-15
    grad = jax.vmap(jax.grad(arcsin))(x[1000:-1000])
    np.testing.assert_allclose(grad, 1.0 / np.sqrt(1.0 - x[1000:-1000] ** 2), rtol=1e-11)


def test_unknown_activation_names_the_field():
    with pytest.raises(ck.SpecError, match="activation: unknown 'swish'"):
        ck.get_activation("swish")
    with pytest.raises(ck.SpecError, match="activation"):
        ck.NetworkSpec(depth=2, activation=3)


@pytest.mark.parametrize("name", ["tanh", "gelu"])
@pytest.mark.parametrize("q", [0.3, 1.0])
def test_default_quadrature_matches_adaptive_integration(name, q):
    from scipy.integrate import quad

    act = ck.get_activation(name)  # trapezoid rule, 80 nodes per dimension
    phi, dphi = PHI[name], DPHI.get(name)
    f = (lambda x: phi(x) ** 2) if dphi is None else (lambda x: dphi(x) ** 2)
    kind = "pp" if dphi is None else "dd"
    density = lambda z: np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)  # noqa: E731
    ref = quad(lambda z: f(np.sqrt(q) * z) * density(z), -12, 12, epsabs=1e-14, epsrel=1e-13)[0]
    assert abs(float(act.self_moment(kind, q)) - ref) < 1e-11  # adaptive quad tolerance 1e-13
