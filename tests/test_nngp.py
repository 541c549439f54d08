"""NNGP recursion (T1) and response functions (T2) against independent routes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import finite_network_kernels

import critical_kernels as ck
from critical_kernels.nngp import mu, response, response_autodiff


def _inputs(P=6, d=4, seed=0):
    return np.random.default_rng(seed).standard_normal((P, d))


@pytest.mark.parametrize("activation", ["erf", "relu", "linear"])
@pytest.mark.parametrize(
    "depth, width, n_nets", [(1, 50, 2000), pytest.param(3, 2000, 100, marks=pytest.mark.slow)]
)  # the deep, wide case is statistical validation (8 s each): slow tier
def test_nngp_equals_mean_kernel_of_finite_networks(activation, depth, width, n_nets):
    X = _inputs()
    g_w = {"erf": 1.5, "relu": 1.8, "linear": 0.9}[activation]
    spec = ck.NetworkSpec(depth=depth, width=width, activation=activation, g_w=g_w, g_b=0.1)
    nngp = ck.nngp_kernels(spec, X)
    kernels = finite_network_kernels(X, activation, depth, width, 1.0, g_w, 0.1, n_nets, seed=depth)
    mean, se = kernels.mean(0), kernels.std(0, ddof=1) / np.sqrt(n_nets)
    # L = 1: E[C1] = mu(C0) exactly. L = 3: the O(1/N) mean shift (T7) is ~1e-4 at N = 2000,
    # under 0.1 of the standard error (~2e-3): 4 standard errors, maximum over entries.
    z = np.abs(mean[1:] - nngp[1:]) / se[1:]
    assert z.max() < 4.0, f"max z-score {z.max():.2f}"
    np.testing.assert_allclose(nngp[0], kernels[0, 0], rtol=1e-12)


def test_nngp_stack_shapes_and_test_rows():
    X, X_test = _inputs(5), _inputs(3, seed=1)
    spec = ck.NetworkSpec(depth=3, g_w=1.4, g_b=0.2)
    both = ck.nngp_kernels(spec, X, X_test)
    assert both.shape == (4, 8, 8)
    np.testing.assert_allclose(both[:, :5, :5], ck.nngp_kernels(spec, X), rtol=1e-14)


def test_per_layer_variances_are_used():
    X = _inputs()
    spec = ck.NetworkSpec(depth=2, activation="linear", g_in=2.0, g_w=[0.5, 3.0], g_b=[0.1, 0.2, 0.3])
    C = ck.nngp_kernels(spec, X)
    C0 = 2.0 / 4 * X @ X.T + 0.1  # linear closed form, layer by layer (T1)
    np.testing.assert_allclose(C[2], 3.0 * (0.5 * C0 + 0.2) + 0.3, rtol=1e-13)


def _sym(P, seed):
    A = np.random.default_rng(seed).standard_normal((P, P))
    return A + A.T


def _prev_kernel(P=7, seed=3):
    X = _inputs(P, 5, seed)
    return X @ X.T / 5 + 0.1


@pytest.mark.parametrize("activation", ["erf", "relu", "linear", "tanh", "gelu"])
def test_vjp_closed_form_equals_autodiff(activation):
    act = ck.get_activation(activation, quad_degree=200)  # the degree matters for tanh, gelu only
    C = jnp.asarray(_prev_kernel())
    A = jnp.asarray(_sym(7, 1))
    closed = response(act, 1.3, C).vjp(A)
    _, vjp = response_autodiff(act, 1.3, 0.1, C)
    # closed forms: 1e-10 (issue 2). Quadrature tiers integrate phi'phi' directly, which differs
    # from the derivative of the quadrature of phi phi by the rule's error (< 1e-11 at 200 nodes)
    np.testing.assert_allclose(closed, vjp(A), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("activation", ["erf", "relu", "linear", "tanh"])
def test_jvp_equals_central_differences(activation):
    act = ck.get_activation(activation, quad_degree=200)
    C, T = jnp.asarray(_prev_kernel()), jnp.asarray(_sym(7, 2))
    eps = 1e-5
    fd = (mu(act, 1.3, 0.1, C + eps * T) - mu(act, 1.3, 0.1, C - eps * T)) / (2 * eps)
    # central differences: truncation O(eps^2) ~ 1e-10 times third derivatives, rounding ~1e-11
    np.testing.assert_allclose(response(act, 1.3, C).jvp(T), fd, rtol=1e-7, atol=1e-8)


def test_jvp_and_vjp_are_adjoint():
    J = response(ck.get_activation("erf"), 1.3, jnp.asarray(_prev_kernel()))
    A, B = jnp.asarray(_sym(7, 4)), jnp.asarray(_sym(7, 5))
    np.testing.assert_allclose(jnp.sum(A * J.jvp(B)), jnp.sum(J.vjp(A) * B), rtol=1e-12)


def test_layer_responses_stack():
    spec = ck.NetworkSpec(depth=3, g_w=[1.0, 1.5, 2.0], g_b=0.1)
    C = ck.nngp_kernels(spec, _inputs())
    Js = ck.layer_responses(spec, C)
    assert Js.dd.shape == (3, 6, 6)
    np.testing.assert_allclose(Js.dd[2], response(spec.act, 2.0, C[2]).dd, rtol=1e-14)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), activation=st.sampled_from(["erf", "relu", "linear"]))
def test_properties_spd_symmetry_permutation(seed, activation):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((6, 3)) * rng.uniform(0.2, 3.0)
    spec = ck.NetworkSpec(depth=2, activation=activation, g_w=rng.uniform(0.3, 3.0), g_b=rng.uniform(0, 1))
    C = ck.nngp_kernels(spec, X)
    perm = rng.permutation(6)
    C_perm = ck.nngp_kernels(spec, X[perm])
    for l in range(3):
        np.testing.assert_allclose(C[l], C[l].T, atol=1e-14)
        assert np.linalg.eigvalsh(C[l]).min() > -1e-12 * np.trace(C[l])  # PSD in -> PSD out
        np.testing.assert_allclose(C_perm[l], C[l][np.ix_(perm, perm)], rtol=1e-12, atol=1e-14)


def test_bad_inputs_name_the_field():
    spec = ck.NetworkSpec(depth=2)
    X = _inputs()
    with pytest.raises(ck.InputError, match="X: contains 1 NaN"):
        ck.nngp_kernels(spec, np.where(np.arange(24).reshape(6, 4) == 5, np.nan, X))
    with pytest.raises(ck.InputError, match="X: expected 2-D"):
        ck.nngp_kernels(spec, X[0])
    with pytest.raises(ck.InputError, match="X_test: has 3 features but X has 4"):
        ck.nngp_kernels(spec, X, X[:, :3])


def test_jit_compiles_once_per_activation():
    spec = ck.NetworkSpec(depth=2, g_w=1.1)
    X = _inputs()
    ck.nngp_kernels(spec, X)
    with jax.log_compiles(False):
        before = ck.nngp._mu_inplace._cache_size()
        ck.nngp_kernels(spec.replace(g_w=1.7, g_b=0.3), X)
        assert ck.nngp._mu_inplace._cache_size() == before
