"""Criticality: closed values of g_c, and fixed points checked with an independent quadrature."""

import math

import numpy as np
import pytest
from reference import DPHI, PHI, gh_self_moment

import critical_kernels as ck


def test_erf_without_bias_is_critical_at_pi_over_4():
    assert abs(ck.critical_gain("erf", 0.0) - math.pi / 4) < 1e-8


@pytest.mark.parametrize("g_b, g_c", [(0.05, 1.376), (0.1, 1.552), (0.2, 1.788), (0.5, 2.234), (1.0, 2.718)])
def test_erf_critical_gain_table(g_b, g_c):
    assert abs(ck.critical_gain("erf", g_b) - g_c) < 1e-3  # THEORY section 2 gives 3 decimals


def test_relu_and_linear_critical_gains():
    assert abs(ck.critical_gain("relu", 0.0) - 2.0) < 1e-12
    assert abs(ck.critical_gain("relu", 0.3) - 2.0) < 1e-9  # chi_1 = g/2 for any q*
    assert abs(ck.critical_gain("linear", 0.1) - 1.0) < 1e-9
    assert abs(ck.critical_gain("tanh", 0.0) - 1.0) < 1e-12  # 1 / tanh'(0)^2


@pytest.mark.parametrize("activation, g_b, g_w", [("erf", 0.1, 1.0), ("erf", 0.1, 2.5), ("tanh", 0.05, 1.8)])
def test_fixed_points_against_independent_quadrature(activation, g_b, g_w):
    cp = ck.criticality(activation, g_b=g_b, g_w=g_w)
    q = cp.q_star
    # q* = g <phi^2>_q* + g_b and chi_1 = g <phi'^2>_q*, with a 1-D rule from NumPy (80 nodes)
    assert abs(g_w * gh_self_moment(lambda x: PHI[activation](x) ** 2, q) + g_b - q) < 1e-10
    assert abs(g_w * gh_self_moment(lambda x: DPHI[activation](x) ** 2, q) - cp.chi_1) < 1e-9
    assert cp.phase == ("chaotic" if cp.chi_1 > 1 else "ordered")
    if cp.phase == "chaotic":  # a stable off-diagonal fixed point below q*, contracting
        assert cp.c_star < q and cp.chi_c < 1
    else:
        assert cp.c_star == q and cp.chi_c == cp.chi_1


def test_at_the_edge_of_chaos_chi_1_is_one_and_depth_scale_diverges():
    cp = ck.criticality("erf", g_b=0.1)
    assert abs(cp.chi_1 - 1) < 1e-9 and cp.phase == "critical" and math.isinf(cp.xi_c)
    assert cp.g_w == cp.g_c


def test_depth_scale_grows_towards_criticality():
    xis = [ck.criticality("erf", g_b=0.1, g_w=g).xi_c for g in (0.8, 1.2, 1.5)]
    assert np.all(np.diff(xis) > 0)


def test_bad_variances_are_named():
    with pytest.raises(ck.SpecError, match="g_b"):
        ck.critical_gain("erf", -0.1)
    with pytest.raises(ck.SpecError, match="g_w"):
        ck.criticality("erf", 0.1, g_w=0.0)
    with pytest.raises(ck.SpecError, match="activation"):
        ck.criticality("softsign")
