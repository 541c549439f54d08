"""Normalisability of the tilted measure (T20, estimators/growth.py) against independent references:
the one-dimensional closed form, the generalised eigenproblem of linear phi, and exhaustive grids over
the sphere for relu in two and three dimensions."""

import numpy as np
import pytest
import scipy.linalg

from critical_kernels.activations import get_activation
from critical_kernels.estimators.growth import growth_problem, growth_slopes, tilt_growth

RELU, LINEAR, ERF = (get_activation(a) for a in ("relu", "linear", "erf"))


def _random_pair(n, seed):
    rng = np.random.default_rng(seed)
    B = rng.normal(size=(n, n))
    A = rng.normal(size=(n, n))
    return B @ B.T / n + 0.1 * np.eye(n), 0.3 * (A + A.T)


def _grid_growth(g, A, C, n_grid):
    """max over a grid of unit directions e of 2 g relu(e)^T A relu(e) / e^T C^-1 e (T20, exhaustive)."""
    if len(A) == 2:
        t = np.linspace(0, 2 * np.pi, n_grid, endpoint=False)
        e = np.stack([np.cos(t), np.sin(t)], axis=1)
    else:
        t, p = np.meshgrid(np.linspace(0, np.pi, n_grid), np.linspace(0, 2 * np.pi, 2 * n_grid))
        e = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], axis=-1).reshape(-1, 3)
    f = np.maximum(e, 0.0)
    num = np.einsum("ka,ab,kb->k", f, A, f)
    den = np.einsum("ka,ab,kb->k", e, np.linalg.inv(C), e)
    return 2 * g * max(float(np.max(num / den)), 0.0)


def test_slopes_of_the_builtin_activations():
    assert growth_slopes(RELU) == (1.0, 0.0) and growth_slopes(LINEAR) == (1.0, 1.0)
    assert growth_slopes(ERF) == (0.0, 0.0) and growth_slopes(get_activation("gelu")) == (1.0, 0.0)


def test_one_dimension_closed_form():
    # exp(-h^2 / 2c + g a relu(h)^2): normalisable iff 2 g a c < 1 (a > 0); a < 0 never diverges
    assert tilt_growth(RELU, 1.5, [[0.4]], [[2.0]]) == pytest.approx(2 * 1.5 * 0.4 * 2.0, rel=1e-10)
    assert tilt_growth(RELU, 1.5, [[-0.4]], [[2.0]]) == 0.0
    assert tilt_growth(ERF, 1.5, [[0.4]], [[2.0]]) == 0.0  # bounded phi: always normalisable


def test_linear_is_the_generalised_eigenvalue():
    C, A = _random_pair(6, 0)
    reference = 2 * 0.7 * scipy.linalg.eigh(A, np.linalg.inv(C), eigvals_only=True).max()
    assert tilt_growth(LINEAR, 0.7, A, C) == pytest.approx(reference, rel=1e-9)


@pytest.mark.parametrize("n, seed, n_grid", [(2, 1, 200_000), (2, 2, 200_000), (3, 3, 600), (3, 4, 600)])
def test_relu_ascent_finds_the_exhaustive_maximum(n, seed, n_grid):
    C, A = _random_pair(n, seed)
    found, grid = tilt_growth(RELU, 1.2, A, C), _grid_growth(1.2, A, C, n_grid)
    # the grid is a lower bound within its spacing (relative ~1e-9 in 2-D, ~3e-5 in 3-D at 600 x 1200)
    assert found >= grid * (1 - 1e-9) and found == pytest.approx(grid, rel=1e-4), (found, grid)


def test_growth_problem_names_the_layer():
    assert growth_problem(np.array([0.3, 0.9])) == ""
    assert "layer 2 is not normalisable: 2 g lambda* = 1.3" in growth_problem(np.array([0.3, 1.3]))
