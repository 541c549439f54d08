"""Configs that reproduce other papers' conventions map onto the project's spec and data as documented."""

from pathlib import Path

import numpy as np
import pytest
from conftest import MNIST

import critical_kernels as ck
from critical_kernels.experiments import load_sweep
from critical_kernels.experiments.runner import load_data, make_spec

ROOT = Path(__file__).resolve().parents[1]


def test_pacelli_conventions_map_onto_the_spec_and_the_data():
    """examples/pacelli_fig1a.toml: lambda = 1 and T = 1e-3 are g_in = g_w = 1, g_b = 0, kappa = 1e-3;
    digits 0 vs 1 carry labels 0 / 1; every pixel is standardised on the training split."""
    if not MNIST.is_dir():
        pytest.skip("MNIST files not found")
    sweep = load_sweep(ROOT / "examples" / "pacelli_fig1a.toml", [f"data.path={MNIST}"])
    config = sweep.points[0].config
    spec = make_spec(config)
    assert (spec.depth, spec.g_in, spec.gains, spec.bias_vars, spec.kappa) == (
        1,
        1.0,
        (1.0,),
        (0.0, 0.0),
        0.001,
    )
    data = load_data(config)
    assert set(np.unique(data.Y)) == {0.0, 1.0} and data.X.shape == (100, 784)
    std = data.X.std(axis=0)
    assert np.allclose(std[std > 0], 1.0) and np.allclose(data.X.mean(axis=0), 0.0)
    labels = ck.datasets.mnist_binary((0, 1), path=MNIST, n_train=100, n_test=0).Y  # default: +1 / -1
    np.testing.assert_array_equal(data.Y, (1 - labels) / 2)  # the same rows, digit 0 -> 0, 1 -> 1
