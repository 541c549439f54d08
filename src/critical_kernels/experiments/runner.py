"""Run one experiment: NNGP, first-order, MAP and sampled kernels of every layer, as a Dataset.

The experiment layer computes the CKA, its standard error and the test predictions once per run
from every estimate; the estimators only estimate kernels (DESIGN: one estimator convention), each
called with the options objects of the config's [methods] tables.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import platform
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np
import xarray as xr

from .. import __version__, datasets
from .. import progress as progress_display
from ..critical_point import critical_gain, criticality
from ..errors import CriticalKernelsError, InputError
from ..estimators import KernelEstimate
from ..estimators.registry import REGISTRY, Estimator
from ..metrics import cka_layers, cka_layers_se
from ..nngp import nngp_kernels
from ..numerics import limit_blas_threads
from ..predictive import Predictive, kernel_predictive, test_loss
from ..spec import NetworkSpec
from .attrs import estimate_attrs
from .config import ExperimentConfig


def load_data(config: ExperimentConfig) -> datasets.Dataset:
    """The data set a config names (nothing is downloaded)."""
    d = config.data
    if d.task == "xor":
        return datasets.xor(n_train=d.n_train, n_test=d.n_test, dim=d.dim, noise=d.noise, seed=d.seed)
    conventions = dict(targets=d.targets, standardise=d.standardise)
    if d.task == "digits":
        return datasets.digits_binary(
            d.classes, n_train=d.n_train, n_test=d.n_test, seed=d.seed, **conventions
        )
    if d.task == "mnist":
        path = d.path or "."
        return datasets.mnist_binary(
            d.classes, path=path, n_train=d.n_train, n_test=d.n_test, seed=d.seed, **conventions
        )
    return datasets.from_file(d.path or "")


def make_spec(config: ExperimentConfig) -> NetworkSpec:
    """The NetworkSpec of a config (the [network] fields are NetworkSpec fields)."""
    fields = config.network.model_dump()
    ratio = fields.pop("g_w_over_g_c")
    if ratio is not None:
        g_b = fields["g_b"]
        if isinstance(g_b, list):
            raise InputError("network.g_w_over_g_c: needs one scalar g_b (got per-layer g_b)")
        fields["g_w"] = ratio * critical_gain(fields["activation"], g_b)
    return NetworkSpec(**fields)


def derived(config: ExperimentConfig, n_train: int | None = None) -> dict:
    """Values a config implies: the g_w used (from `network.g_w_over_g_c` where set), the critical
    g_c of the activation and g_b, chi_1 = g_w <phi'^2> (1 at the edge of chaos) and alpha = P/N.

    g_c and chi_1 are NaN where g_w or g_b vary per layer, or the activation has no g_c.
    """
    spec = make_spec(config)
    P = config.data.n_train if n_train is None else int(n_train)
    scalar = np.ndim(spec.g_w) == 0 and np.ndim(spec.g_b) == 0
    g_c = chi_1 = np.nan
    if scalar:
        try:
            point = criticality(config.network.activation, g_b=float(spec.g_b), g_w=float(spec.g_w))
            g_c, chi_1 = float(point.g_c), float(point.chi_1)
        except CriticalKernelsError:
            pass
    g_w = float(spec.g_w) if np.ndim(spec.g_w) == 0 else [float(v) for v in spec.g_w]
    return {"g_w": g_w, "g_c": g_c, "chi_1": chi_1, "P": P, "alpha": P / spec.width}


DEPENDENCIES = ("jax", "jaxlib", "blackjax", "numpy", "xarray")  # the packages that make the numbers


def versions() -> dict:
    """Versions of Python, of this package (its __version__, also in an editable install) and of
    DEPENDENCIES."""
    out = {"python": platform.python_version(), "critical_kernels": __version__}
    for package in DEPENDENCIES:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:  # pragma: no cover - every one is a dependency
            out[package] = "not installed"
    return out


def estimators(config: ExperimentConfig) -> list[Estimator]:
    """The registered estimators the config turns on, in run order."""
    return [e for name, e in REGISTRY.items() if config.methods.runs(name)]


def usable(estimate: KernelEstimate) -> bool:
    """Kernels fit to measure (the estimator's own rule, `Estimator.usable`)."""
    return REGISTRY[estimate.estimator].usable(estimate)


@limit_blas_threads
def run(
    config: ExperimentConfig,
    status: Callable[[str], None] = lambda message: None,
    progress: bool | None = None,
    checkpoints: Path | None = None,
) -> xr.Dataset:
    """Compute every requested kernel of every layer and collect them in one Dataset.

    status(message) hears which estimator runs; progress: the estimators' own progress bars (None: on
    a terminal outside CI; False: none, as in sweep workers); checkpoints: a folder where the
    sampled networks keep their progress (`Chains.checkpoint`), so that the same call after a kill
    resumes them (the file stays: the caller removes it once the result is written).

    Variables: kernel (estimator, layer, row, col) on train + test inputs, cka and cka_se
    (estimator, layer), the posterior predictive f_test and f_test_var (estimator, test, output) and
    its TEST_SCORES (estimator); attrs: every estimate's E_* attrs
    (`attrs.estimate_attrs`), the shapes of its larger info arrays ("arrays"), timings, config.
    """
    data = load_data(config)
    spec = make_spec(config)
    timings = {}

    def timed(name, fn):
        status(f"{name} ...")
        start = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - start
        return out

    nngp = timed("nngp", lambda: nngp_kernels(spec, data.X, data.X_test))
    estimates = {}
    with contextlib.nullcontext() if progress is not False else progress_display.to_status(lambda text: None):
        for e in estimators(config):
            # settings that do not change the draws: the display, and where this estimator's chains
            # keep their checkpoint (if it samples chains)
            checkpoint = None if checkpoints is None else Path(checkpoints) / f"{e.name}.chains"
            chains = dataclasses.replace(config.methods.chains, progress=progress, checkpoint=checkpoint)
            methods = config.methods.model_copy(update={"chains": chains})
            call = functools.partial(
                e.call, methods, spec, data.X, data.Y, data.X_test, estimates, config.seed
            )
            estimates[e.name] = timed(e.name, call)
    attrs = {
        **run_attrs(estimates),
        "name": config.name,
        "data": data.name,
        "n_train": data.n_train,
        "timings": json.dumps(timings),
        "config": config.model_dump_json(),
        "versions": json.dumps(versions()),
    }
    return _dataset(estimates, nngp, data, spec, attrs)


# per estimator, from its posterior predictive on the test rows (T21, `predictive.test_loss`): the
# predictive mean's squared error and sign error, the loss with the predictive variance, their Monte
# Carlo SEs, and the squared error of the kernel predictor at the mean kernel (the shortcut)
TEST_SCORES = (
    "test_mse",
    "test_mse_se",
    "test_loss",
    "test_loss_se",
    "test_error",
    "test_error_se",
    "test_mse_plugin",
)
_SCORE_NAMES = {  # `test_loss`'s keys -> TEST_SCORES
    "mse": "test_mse",
    "mse_se": "test_mse_se",
    "loss": "test_loss",
    "loss_se": "test_loss_se",
    "class_error": "test_error",
    "class_error_se": "test_error_se",
}


def _dataset(estimates: dict, nngp, data, spec: NetworkSpec, attrs: dict) -> xr.Dataset:
    """The run Dataset: kernels, CKA with its SE and the test predictive of the NNGP and every estimate."""
    kernels = {"nngp": nngp, **{name: e.kernels for name, e in estimates.items()}}
    ok = {"nngp": True, **{name: usable(e) for name, e in estimates.items()}}
    nan = np.full(spec.depth + 1, np.nan)  # the CKA and its SE of an estimate without an answer
    cka_se = {name: _cka_se(estimates.get(name), data.Y, spec.depth) if ok[name] else nan for name in kernels}
    names = list(kernels)
    tested = data.X_test is not None and data.Y_test is not None
    predictive = {"nngp": kernel_predictive(nngp, data.Y, spec.kappa) if tested else None}
    predictive |= {name: e.predictive if ok[name] else None for name, e in estimates.items()}
    scores = {
        name: _scores(predictive[name], kernels[name] if ok[name] else None, data, spec.kappa)
        for name in names
    }
    variables = {
        "kernel": (("estimator", "layer", "row", "col"), np.stack([kernels[k] for k in names])),
        "cka": (
            ("estimator", "layer"),
            np.stack([cka_layers(kernels[k], data.Y) if ok[k] else nan for k in names]),
        ),
        "cka_se": (("estimator", "layer"), np.stack([cka_se[k] for k in names])),
        **{score: (("estimator",), [scores[k][score] for k in names]) for score in TEST_SCORES},
        "Y": (("train", "output"), data.Y),
    }
    if tested:
        shape = (len(nngp[0]) - len(data.Y), data.Y.shape[1])  # (P_test, D)
        for field in ("mean", "var"):
            rows = [
                getattr(p, field) if p is not None else np.full(shape, np.nan) for p in predictive.values()
            ]
            variables["f_test" if field == "mean" else "f_test_var"] = (
                ("estimator", "test", "output"),
                np.stack(rows),
            )
    return xr.Dataset(
        variables,
        coords={
            "estimator": names,
            "layer": np.arange(spec.depth + 1),
            "row": np.arange(len(nngp[0])),
            "col": np.arange(len(nngp[0])),
        },
        attrs=attrs,
    )


def _cka_se(estimate: KernelEstimate | None, Y, depth: int) -> np.ndarray:
    """SE of the CKA of every layer from the estimate's own set of estimates (batch means,
    leave-one-batch-out estimates or replicas); zero where the kernels are exact (NNGP, a deterministic
    method: closed forms, quadrature), NaN where a Monte Carlo estimate has none."""
    if estimate is not None and estimate.estimates is not None:
        return cka_layers_se(estimate.estimates.kernels, Y, kind=estimate.estimates.kind)
    if (
        estimate is not None
        and not (estimate.method and estimate.method.deterministic)
        and estimate.se is not None
    ):
        return np.full(depth + 1, np.nan)  # a Monte Carlo estimate without its set of estimates
    return np.zeros(depth + 1)


def run_attrs(estimates: dict) -> dict:
    """The E_* attrs of every estimate and the shapes of their >= 2-D info arrays as one JSON attr
    ("arrays")."""
    attrs, shapes = {}, {}
    for estimate in estimates.values():
        more, arrays = estimate_attrs(estimate)
        attrs.update(more)
        shapes.update(arrays)
    return {**attrs, "arrays": json.dumps(shapes)}


def _scores(predictive: Predictive | None, kernels, data, kappa) -> dict:
    """TEST_SCORES of one estimator (NaN without test rows or where it has no predictive)."""
    out = dict.fromkeys(TEST_SCORES, np.nan)
    if kernels is None or data.X_test is None or data.Y_test is None:
        return out
    plugin = kernel_predictive(kernels, data.Y, kappa)
    out["test_mse_plugin"] = test_loss(plugin, data.Y_test)["mse"]
    if predictive is not None:
        out |= {_SCORE_NAMES[k]: v for k, v in test_loss(predictive, data.Y_test).items()}
    return out
