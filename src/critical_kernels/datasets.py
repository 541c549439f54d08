"""Data sets: XOR clusters, scikit-learn digits, MNIST idx files, arrays and files.

Every loader returns a Dataset with inputs standardised on the training split: centred, then
scaled by one global factor so that the mean of |x|^2 / d over training inputs is 1 (the input
kernel C0 = g_in X X^T / d then has mean diagonal g_in).
"""

from __future__ import annotations

import gzip
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .numerics import as_array, check_targets


@dataclass(frozen=True)
class Dataset:
    """Inputs X (P, d), targets Y (P, D), test inputs X_test (P_test, d), targets Y_test."""

    X: np.ndarray
    Y: np.ndarray
    X_test: np.ndarray | None = None
    Y_test: np.ndarray | None = None
    name: str = "data"

    @property
    def n_train(self) -> int:
        return self.X.shape[0]


def _standardise(X: np.ndarray, X_test: np.ndarray | None, per_feature: bool = False):
    """Centre every feature on the training split and divide by one global scale (mean |x|^2 / d = 1),
    or (per_feature) by each feature's own standard deviation, constant features left at 0."""
    mean = X.mean(axis=0)
    scale = np.sqrt(np.mean(np.sum((X - mean) ** 2, axis=1)) / X.shape[1])
    if not scale > 0:
        raise InputError("X: all training inputs are identical; nothing to standardise")
    if per_feature:
        std = X.std(axis=0)
        scale = np.where(std > 0, std, 1.0)
    return (X - mean) / scale, None if X_test is None else (X_test - mean) / scale


LABELS = ("pm1", "01")  # targets of the first / second class: +1 / -1, or 0 / 1 (Pacelli et al. 2023)
STANDARDISE = ("global", "pixelwise")


def from_arrays(X, Y, X_test=None, Y_test=None, *, standardise: bool = True, name: str = "arrays") -> Dataset:
    """A Dataset from arrays, checked for shapes and NaN, optionally standardised."""
    X = as_array("X", X, 2)
    Y = check_targets(Y, X.shape[0])
    if X_test is not None:
        X_test = as_array("X_test", X_test, 2)
        if X_test.shape[1] != X.shape[1]:
            raise InputError(f"X_test: has {X_test.shape[1]} features but X has {X.shape[1]}")
        if Y_test is not None:
            Y_test = as_array("Y_test", Y_test, (1, 2)).reshape(X_test.shape[0], -1)
    if standardise:
        X, X_test = _standardise(X, X_test)
    return Dataset(X, Y, X_test, Y_test, name)


def _count(value) -> int:
    """An integer count (not a bool, float or string), else InputError naming the value."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InputError(f"expected an integer count, got {value!r}")
    return int(value)


def _split(X, labels, classes, sizes: tuple, seed, name, targets="pm1", standardise="global") -> Dataset:
    """Keep two classes, label them (`targets`: +1 / -1 or 0 / 1), shuffle with `seed`, split into
    sizes = (n_train, n_test) (n_test None: the rest) and standardise (pixelwise or global)."""
    n_train, n_test = sizes
    for name_, value, allowed in (("targets", targets, LABELS), ("standardise", standardise, STANDARDISE)):
        if value not in allowed:
            raise InputError(f"{name_}: expected one of {', '.join(allowed)}, got {value!r}")
    if len(classes) != 2 or classes[0] == classes[1]:
        raise InputError(f"classes: need two different labels, got {classes}")
    missing = [c for c in classes if not np.any(labels == c)]
    if missing:
        present = np.unique(labels)
        raise InputError(
            f"classes: {name.split()[0]} has no label {missing[0]} (its labels are "
            f"{present.min()}..{present.max()}); choose two of them"
        )
    keep = np.isin(labels, classes)
    first, second = (1.0, -1.0) if targets == "pm1" else (0.0, 1.0)
    X, y = X[keep].astype(np.float64), np.where(labels[keep] == classes[0], first, second)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = len(y) - n_train if n_test is None else n_test
    if _count(n_train) < 2 or _count(n_test) < 0 or n_train + n_test > len(y):
        raise InputError(f"n_train + n_test: {n_train} + {n_test} exceeds the {len(y)} samples of {name}")
    tr, te = order[:n_train], order[n_train : n_train + n_test]
    X_test = X[te] if n_test else None
    X_tr, X_test = _standardise(X[tr], X_test, per_feature=standardise == "pixelwise")
    return Dataset(X_tr, y[tr, None], X_test, y[te, None] if n_test else None, name)


def xor(
    n_train: int = 40,
    n_test: int = 200,
    dim: int = 10,
    noise: float = 0.2,
    seed: int = 0,
    *,
    standardise: bool = True,
) -> Dataset:
    """Four Gaussian clusters: +-mu labelled +1, +-nu labelled -1, mu orthogonal to nu (THEORY 7).

    mu = e1, nu = e2 in `dim` dimensions, isotropic cluster noise of std `noise`. Odd
    activations need biases on this task (C(x, -x) = -C(x, x) otherwise). standardise=False
    keeps the raw inputs (mean |x|^2 / d = (1 + dim noise^2) / dim, 0.14 by default).
    """
    if _count(dim) < 2:
        raise InputError(f"dim: XOR needs at least 2 dimensions, got {dim}")
    if _count(n_train) < 2:
        raise InputError(f"n_train: need at least 2 training points, got {n_train}")
    if _count(n_test) < 0:
        raise InputError(f"n_test: must be >= 0, got {n_test}")
    if not (isinstance(noise, int | float | np.floating) and np.isfinite(noise) and noise >= 0):
        raise InputError(f"noise: must be a finite number >= 0, got {noise!r}")
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    cluster = rng.permutation(np.arange(n) % 4)
    centres = np.zeros((4, dim))
    centres[0, 0], centres[1, 0], centres[2, 1], centres[3, 1] = 1.0, -1.0, 1.0, -1.0
    X = centres[cluster] + noise * rng.standard_normal((n, dim))
    y = np.where(cluster < 2, 1.0, -1.0)
    X_tr, X_te = X[:n_train], X[n_train:] if n_test else None
    if standardise:
        X_tr, X_te = _standardise(X_tr, X_te)
    return Dataset(X_tr, y[:n_train, None], X_te, y[n_train:, None] if n_test else None, "xor")


def digits_binary(
    classes=(0, 3), n_train: int = 100, n_test: int | None = None, seed: int = 0, **conventions
) -> Dataset:
    """Two classes of scikit-learn's bundled 8x8 digits (the embedded default), y = +1 / -1
    (conventions: targets="01", standardise="pixelwise", as `_split`)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    name = f"digits {classes[0]} vs {classes[1]}"
    return _split(X, y, tuple(classes), (n_train, n_test), seed, name, **conventions)


def _read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzipped) as in the MNIST distribution."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError; a cut-off .gz is an EOFError
        kind = "gzip" if opener is gzip.open else "idx"
        raise InputError(f"{path}: cannot be read as {kind} ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise InputError(f"{path}: not an unsigned-byte idx file")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise InputError(f"{path}: truncated idx header")
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise InputError(f"{path}: truncated idx file ({data.size} of {int(np.prod(dims))} values)")
    return data.reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.exists():
            return candidate
    raise InputError(f"path: no {stem}[.gz] in {directory}")


def mnist_binary(
    classes=(0, 3),
    path=".",
    n_train: int = 100,
    n_test: int | None = 500,
    seed: int = 0,
    split: str = "t10k",
    **conventions,
) -> Dataset:
    """Two MNIST classes from idx files in directory `path` (e.g. t10k-images-idx3-ubyte.gz), y = +1 / -1
    (conventions: targets="01", standardise="pixelwise", as `_split`)."""
    directory = Path(path)
    images = _read_idx(_find(directory, f"{split}-images-idx3-ubyte"))
    labels = _read_idx(_find(directory, f"{split}-labels-idx1-ubyte"))
    X = images.reshape(images.shape[0], -1)
    name = f"mnist {classes[0]} vs {classes[1]}"
    return _split(X, labels, tuple(classes), (n_train, n_test), seed, name, **conventions)


def from_file(path, *, standardise: bool = True) -> Dataset:
    """Load .npz (arrays X, Y and optionally X_test, Y_test) or .csv (label in the last column)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"path: {path} does not exist")
    if not path.is_file():
        raise InputError(f"path: {path} is a directory; give an .npz or .csv file")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = {"X", "Y"} - set(z.files)
                if missing:
                    raise InputError(f"{path}: missing arrays {sorted(missing)}; save X and Y with np.savez")
                parts = {k: z[k] for k in ("X", "Y", "X_test", "Y_test") if k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            if isinstance(err, InputError):
                raise
            raise InputError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from None
        return from_arrays(**parts, standardise=standardise, name=path.stem)
    if path.suffix == ".csv":
        try:
            with warnings.catch_warnings():  # an empty file warns; it is rejected below
                warnings.simplefilter("ignore", UserWarning)
                table = np.loadtxt(path, delimiter=",", ndmin=2)
        except (OSError, ValueError, UnicodeDecodeError) as err:
            raise InputError(f"{path}: not a numeric CSV file ({err})") from None
        if table.size == 0 or table.shape[1] < 2:
            raise InputError(f"{path}: need comma-separated rows: features, then a label ({table.shape})")
        return from_arrays(table[:, :-1], table[:, -1], standardise=standardise, name=path.stem)
    raise InputError(f"path: unsupported file type {path.suffix!r}; use .npz or .csv")
