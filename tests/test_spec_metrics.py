"""NetworkSpec validation and CKA (T16)."""

import numpy as np
import pytest

import critical_kernels as ck
from critical_kernels.metrics import cka_layers_se, se_target


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


def _kernel_stack(rng):
    X = rng.normal(size=(6, 3))
    return np.stack([X @ X.T, np.tanh(X) @ np.tanh(X).T + 0.1])


def _noisy(K, rng, n, scale=1e-3):
    """n independent noisy estimates of the kernel stack K (symmetric noise)."""
    noise = rng.normal(size=(n, *K.shape)) * scale
    return K + (noise + np.swapaxes(noise, -1, -2)) / 2


def test_cka_se_kinds_agree_on_the_same_batches():
    """Batch means, their leave-one-out means (jackknife) and full replicas give one SE, by three
    formulas: for a statistic this close to linear the jackknife equals the batch SE to O(noise)."""
    rng = np.random.default_rng(0)
    Y = np.sign(rng.normal(size=(6, 1)))
    K = _kernel_stack(rng)
    batches = _noisy(K, rng, 16)
    loo = (batches.sum(axis=0)[None] - batches) / 15
    se_batches = cka_layers_se(batches, Y)
    np.testing.assert_allclose(cka_layers_se(loo, Y, kind="jackknife"), se_batches, rtol=1e-3)
    # a replica is one batch-sized estimate: its spread is sqrt(16) times the SE of the 16-batch mean
    np.testing.assert_allclose(cka_layers_se(batches, Y, kind="replicas"), 4 * se_batches, rtol=1e-12)
    # and the batch SE matches the spread of the 16-batch mean over 400 independent repetitions
    means = [ck.cka_layers(_noisy(K, np.random.default_rng(k), 16).mean(axis=0), Y) for k in range(1, 401)]
    ratio = se_batches[1:] / np.std(means, axis=0, ddof=1)[1:]
    assert np.all((ratio > 0.6) & (ratio < 1.45)), (
        ratio
    )  # one 16-batch SE: chi_15 / sqrt(15), 99 % in 0.55-1.5
    with pytest.raises(ck.InputError, match="kind"):
        cka_layers_se(batches, Y, kind="bootstrap")


def test_se_target_floors_small_adaptations():
    # rtol |a| where a layer adapts at least a tenth of the largest, rtol max|a| / 10 below that
    np.testing.assert_allclose(se_target([0.05, -0.02, 0.001], 0.02), [1e-3, 4e-4, 1e-4])
    np.testing.assert_allclose(se_target([0.0, 0.0], 0.02), [0.0, 0.0])


def test_one_standard_error_formula_for_every_kind():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 3, 2))
    s = x.std(axis=0, ddof=1)
    np.testing.assert_array_equal(ck.standard_error(x, "replicas"), s)
    np.testing.assert_allclose(ck.standard_error(x, "batches"), s / 4, rtol=1e-15)
    np.testing.assert_allclose(ck.standard_error(x, "jackknife"), s * 15 / 4, rtol=1e-15)
    Y = np.sign(rng.normal(size=(6, 1)))
    kernels = _noisy(_kernel_stack(rng), rng, 8)
    per_estimate = np.array([ck.cka_layers(k, Y) for k in kernels])
    for kind in ("batches", "jackknife", "replicas"):  # the CKA SE is the same formula on the CKA
        np.testing.assert_array_equal(
            cka_layers_se(kernels, Y, kind=kind), ck.standard_error(per_estimate, kind)
        )
    with pytest.raises(ck.InputError, match="kind"):
        ck.standard_error(x, "bootstrap")
