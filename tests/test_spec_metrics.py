"""NetworkSpec validation and CKA (T16)."""

import numpy as np
import pytest

import critical_kernels as ck


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(depth=0), "depth"),
        (dict(depth=2, width=-3), "width"),
        (dict(depth=2, width=2.5), "width"),
        (dict(depth=2, g_w=-1.0), "g_w"),
        (dict(depth=2, g_w=[1.0, 2.0, 3.0]), "g_w: expected a scalar or 2 values"),
        (dict(depth=2, g_b=[0.1, 0.1]), "g_b: expected a scalar or 3 values"),
        (dict(depth=2, g_b=-0.1), "g_b"),
        (dict(depth=2, g_in=float("nan")), "g_in"),
        (dict(depth=2, kappa=0.0), "kappa"),
        (dict(depth=2, kappa=-1.0), "kappa"),
        (dict(depth=2, n_out=0), "n_out"),
        (dict(depth=2, activation="sigmoidal"), "activation"),
    ],
)
def test_invalid_spec_names_the_field(kwargs, field):
    with pytest.raises(ck.SpecError, match=field):
        ck.NetworkSpec(**kwargs)


def test_spec_broadcasts_and_replaces():
    spec = ck.NetworkSpec(depth=3, g_w=1.5, g_b=[0.0, 0.1, 0.2, 0.3])
    assert spec.gains == (1.5, 1.5, 1.5) and spec.bias_vars == (0.0, 0.1, 0.2, 0.3)
    assert spec.replace(width=7).width == 7 and spec.replace(width=7).gains == spec.gains


def test_cka_matches_explicit_centering_matrices():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((9, 9))
    K, Y = A @ A.T, rng.choice([-1.0, 1.0], size=(9, 1))
    H = np.eye(9) - np.ones((9, 9)) / 9
    Kc, Tc = H @ K @ H, H @ Y @ Y.T @ H
    expected = np.sum(Kc * Tc) / np.sqrt(np.sum(Kc * Kc) * np.sum(Tc * Tc))
    assert abs(ck.cka(K, Y) - expected) < 1e-14
    assert abs(ck.cka(3.0 * Y @ Y.T + 2.0, Y[:, 0]) - 1.0) < 1e-14  # scale and offset invariant


def test_cka_layers_uses_training_block():
    Y = np.array([[1.0], [-1.0], [1.0]])
    stack = np.stack([np.eye(5), np.pad(Y @ Y.T, ((0, 2), (0, 2)))])
    np.testing.assert_allclose(ck.cka_layers(stack, Y)[1], 1.0)


def test_cka_rejects_bad_shapes():
    with pytest.raises(ck.InputError, match="cka"):
        ck.cka(np.eye(3), np.ones((4, 1)))


def test_cka_layers_is_nan_where_undefined():
    stack = np.stack([np.ones((3, 3)), np.eye(3)])
    out = ck.cka_layers(stack, np.array([1.0, -1.0, 1.0]))
    assert np.isnan(out[0]) and np.isfinite(out[1])
