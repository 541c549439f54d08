"""Data loaders: shapes, labels, standardisation, file formats, bad files."""

import gzip

import numpy as np
import pytest
from conftest import MNIST

import critical_kernels as ck


def test_xor_clusters_and_labels():
    data = ck.datasets.xor(n_train=40, n_test=20, dim=6, seed=1)
    assert data.X.shape == (40, 6) and data.X_test.shape == (20, 6) and data.Y.shape == (40, 1)
    assert set(np.unique(data.Y)) == {-1.0, 1.0} and abs(data.Y.sum()) <= 2
    assert abs(np.mean(np.sum(data.X**2, axis=1)) / 6 - 1.0) < 1e-12  # standardised


def test_digits_binary():
    data = ck.datasets.digits_binary((0, 3), n_train=50, n_test=30, seed=0)
    assert data.X.shape == (50, 64) and data.X_test.shape == (30, 64)
    assert np.all(np.isin(data.Y, [-1.0, 1.0]))
    with pytest.raises(ck.InputError, match="n_train"):
        ck.datasets.digits_binary((0, 3), n_train=400)


@pytest.mark.skipif(not MNIST.exists(), reason="shared MNIST files absent")
def test_mnist_binary_from_idx_files():
    data = ck.datasets.mnist_binary((0, 3), path=MNIST, n_train=60, n_test=40, seed=2)
    assert data.X.shape == (60, 784) and data.Y_test.shape == (40, 1)


def test_truncated_idx_file_is_rejected(tmp_path):
    header = bytes([0, 0, 8, 1]) + np.array([10], dtype=">i4").tobytes()
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(header + bytes(5))
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(bytes([0, 0, 8, 3]) + np.array([10, 2, 2], dtype=">i4").tobytes() + bytes(40))
    with pytest.raises(ck.InputError, match="truncated"):
        ck.datasets.mnist_binary(path=tmp_path)


def test_npz_and_csv_files(tmp_path):
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((10, 3)), rng.choice([-1.0, 1.0], 10)
    np.savez(tmp_path / "d.npz", X=X, Y=Y)
    np.savetxt(tmp_path / "d.csv", np.column_stack([X, Y]), delimiter=",")
    a, b = ck.datasets.from_file(tmp_path / "d.npz"), ck.datasets.from_file(tmp_path / "d.csv")
    np.testing.assert_allclose(a.X, b.X, rtol=1e-12)
    with pytest.raises(ck.InputError, match="missing arrays"):
        np.savez(tmp_path / "e.npz", X=X)
        ck.datasets.from_file(tmp_path / "e.npz")
    with pytest.raises(ck.InputError, match="Y: has 9 rows"):
        ck.datasets.from_arrays(X, Y[:9])
