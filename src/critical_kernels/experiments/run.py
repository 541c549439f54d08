"""Run one experiment: NNGP, first-order, MAP and sampled kernels of every layer, as a Dataset."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np
import xarray as xr

from .. import datasets
from ..criticality import critical_gain
from ..errors import InputError
from ..map_solver import solve_map
from ..metrics import cka_layers
from ..nngp import nngp_kernels
from ..perturbative import perturbative_kernels
from ..predict import kernel_predict, test_error
from ..sampling import sample_posterior
from ..spec import NetworkSpec
from .config import ExperimentConfig


def load_data(config: ExperimentConfig) -> datasets.Dataset:
    """The data set a config names (nothing is downloaded)."""
    d = config.data
    if d.task == "xor":
        return datasets.xor(n_train=d.n_train, n_test=d.n_test, dim=d.dim, noise=d.noise, seed=d.seed)
    if d.task == "digits":
        return datasets.digits_binary(d.classes, n_train=d.n_train, n_test=d.n_test, seed=d.seed)
    if d.task == "mnist":
        return datasets.mnist_binary(
            d.classes, path=d.path or ".", n_train=d.n_train, n_test=d.n_test, seed=d.seed
        )
    return datasets.from_file(d.path or "")


def make_spec(config: ExperimentConfig) -> NetworkSpec:
    """The NetworkSpec of a config (the [network] fields are NetworkSpec fields)."""
    fields = config.network.model_dump()
    ratio = fields.pop("g_w_over_g_c")
    if ratio is not None:
        if not np.isscalar(fields["g_b"]):
            raise InputError("network.g_w_over_g_c: needs one scalar g_b (got per-layer g_b)")
        fields["g_w"] = ratio * critical_gain(fields["activation"], fields["g_b"])
    return NetworkSpec(**fields)


def run(
    config: ExperimentConfig, status: Callable[[str], None] = lambda message: None, progress: bool = True
) -> xr.Dataset:
    """Compute every requested kernel of every layer and collect them in one Dataset.

    Variables: kernel (method, layer, row, col) on train + test inputs, cka and cka_se
    (method, layer), test_error and test_mse (method); attrs: convergence, diagnostics, timings.
    """
    data = load_data(config)
    spec = make_spec(config)
    m, seed = config.methods, config.seed
    kernels, cka_se, attrs, timings = {}, {}, {}, {}

    def timed(name, fn):
        status(f"{name} ...")
        start = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - start
        return out

    kernels["nngp"] = timed("nngp", lambda: nngp_kernels(spec, data.X, data.X_test))
    if m.perturbative:
        res = timed(
            "perturbative",
            lambda: perturbative_kernels(spec, data.X, data.Y, data.X_test, key=seed, n_samples=m.n_samples),
        )
        kernels["perturbative"] = res.kernels
    if m.map:
        res = timed(
            "map",
            lambda: solve_map(
                spec, data.X, data.Y, data.X_test, m.map_method, key=seed, n_samples=m.n_samples, throw=False
            ),
        )
        kernels["map"] = res.kernels
        attrs.update(
            map_converged=int(res.converged),
            map_method=res.method,
            map_n_iter=res.n_iter,
            map_residual=res.residual,
            map_message=res.message,
        )
    if m.sampled:
        post = timed(
            "sampled",
            lambda: sample_posterior(
                spec,
                data.X,
                data.Y,
                data.X_test,
                m.sampler,
                chains=m.chains,
                warmup=m.warmup,
                samples=m.samples,
                thin=m.thin,
                key=seed,
                progress=progress,
            ),
        )
        kernels["sampled"] = post.kernels
        cka_se["sampled"] = post.cka_mcse
        attrs.update(
            sampler=post.sampler,
            sampled_ok=int(post.ok),
            sampled_warnings="; ".join(post.warnings),
            rhat_cka=float(np.nanmax(post.rhat_cka)),
            acceptance=float(post.acceptance.mean()),
        )
        if post.f_test is not None and data.Y_test is not None:  # the sampled networks' own predictions
            attrs["sampled_networks_test_error"] = test_error(post.f_test, data.Y_test).get(
                "class_error", np.nan
            )
    methods = list(kernels)
    P = data.n_train
    unusable = {"map"} if not attrs.get("map_converged", 1) else set()  # an unconverged iterate
    errors = {name: _errors(None if name in unusable else K, data, spec.kappa) for name, K in kernels.items()}
    ds = xr.Dataset(
        {
            "kernel": (("estimator", "layer", "row", "col"), np.stack([kernels[k] for k in methods])),
            "cka": (
                ("estimator", "layer"),
                np.stack([_cka(kernels[k], data.Y, k in unusable) for k in methods]),
            ),
            "cka_se": (
                ("estimator", "layer"),
                np.stack([cka_se.get(k, np.zeros(spec.depth + 1)) for k in methods]),
            ),
            "test_error": (("estimator",), [errors[k]["class_error"] for k in methods]),
            "test_mse": (("estimator",), [errors[k]["mse"] for k in methods]),
            "Y": (("train", "output"), data.Y),
        },
        coords={
            "estimator": methods,
            "layer": np.arange(spec.depth + 1),
            "row": np.arange(len(kernels["nngp"][0])),
            "col": np.arange(len(kernels["nngp"][0])),
        },
        attrs={
            **attrs,
            "name": config.name,
            "data": data.name,
            "n_train": P,
            "timings": json.dumps(timings),
            "config": config.model_dump_json(),
        },
    )
    return ds


def _cka(kernels, Y, unusable: bool) -> np.ndarray:
    """CKA of every layer; NaN for an unconverged MAP iterate (its kernels stay in the Dataset)."""
    return np.full(len(kernels), np.nan) if unusable else cka_layers(kernels, Y)


def _errors(kernels, data, kappa) -> dict:
    if kernels is None or data.X_test is None or data.Y_test is None:
        return {"class_error": np.nan, "mse": np.nan}
    out = test_error(kernel_predict(kernels[-1], data.Y, kappa), data.Y_test)
    return {"class_error": out.get("class_error", np.nan), "mse": out["mse"]}
