"""Run one experiment: NNGP, first-order, MAP and sampled kernels of every layer, as a Dataset.

The experiment layer computes the NNGP stack, the CKA and the test predictions once per run; the
estimators only estimate kernels (DESIGN: one estimator convention).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from importlib import metadata

import numpy as np
import xarray as xr

from .. import datasets
from ..criticality import critical_gain, criticality
from ..errors import CriticalKernelsError, InputError
from ..estimators import (
    SAMPLERS,
    Chains,
    ExactGaussian,
    Fallback,
    ImportanceSampling,
    KernelEstimate,
    MonteCarlo,
    Result,
    SecondCumulant,
    TemperedSMC,
    linear_posterior_kernels,
    perturbative_kernels,
    reweighted_kernels,
    sample_posterior,
    solve_map,
)
from ..likelihood import kernel_predict
from ..metrics import cka_layers, cka_layers_se, test_error
from ..nngp import nngp_kernels
from ..numerics import limit_blas_threads
from ..spec import NetworkSpec
from .config import ExperimentConfig, MethodsConfig


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


PACKAGES = ("critical_kernels", "jax", "jaxlib", "blackjax", "numpy", "xarray")


def versions() -> dict:
    """Versions of Python and of the packages that make the numbers."""
    from .. import __version__

    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = __version__ if name == "critical_kernels" else metadata.version(name)
        except metadata.PackageNotFoundError:  # pragma: no cover - every one is a dependency
            out[name] = "not installed"
    return out


def tilted_option(m: MethodsConfig, spec: NetworkSpec):
    """The tilted-average option of `methods.map_method`; "auto" is exact for linear phi, else
    importance sampling with the second-cumulant fallback."""
    if m.map_method == "linear" or (m.map_method == "auto" and spec.act.name == "linear"):
        return ExactGaussian()
    importance, cumulant = ImportanceSampling(m.n_samples), SecondCumulant(m.n_samples)
    return {"importance": importance, "cumulant": cumulant}.get(m.map_method, Fallback(importance, cumulant))


def estimate_all(
    config: ExperimentConfig, spec: NetworkSpec, data, nngp, timed, progress: bool
) -> dict[str, KernelEstimate]:
    """Every estimator the config asks for, failures returned (throw=False), not raised."""
    m, seed = config.methods, config.seed
    budget = dict(rtol=m.rtol or None, max_samples=max(m.max_samples, m.n_samples))  # methods.rtol = 0: off
    data_args = (spec, data.X, data.Y, data.X_test)
    out = {}
    if m.perturbative:
        out["perturbative"] = timed(
            "perturbative",
            lambda: perturbative_kernels(
                *data_args, options=MonteCarlo(m.n_samples, **budget), key=seed, nngp=nngp, throw=False
            ),
        )
    if m.map:
        out["map"] = timed(
            "map",
            lambda: solve_map(
                *data_args, tilted=tilted_option(m, spec), **budget, nngp=nngp, key=seed, throw=False
            ),
        )
    if m.reweighted:
        out["reweighted"] = timed(
            "reweighted",
            lambda: reweighted_kernels(
                spec,
                data.X,
                data.Y,
                data.X_test,
                n_samples=m.reweighted_samples,
                saddle=out.get("map"),  # the run's own saddle point when the MAP was asked for
                tempering=m.tempering,
                smc=TemperedSMC(n_particles=m.smc_particles),
                key=seed,
                throw=False,
            ),
        )
    if m.linear_exact:
        out["linear_exact"] = timed(
            "linear_exact", lambda: linear_posterior_kernels(spec, data.X, data.Y, data.X_test, throw=False)
        )
    if m.sampled:
        chains = Chains(chains=m.chains, warmup=m.warmup, n_samples=m.samples, thin=m.thin)
        out["sampled"] = timed(
            "sampled",
            lambda: sample_posterior(
                spec,
                data.X,
                data.Y,
                data.X_test,
                sampler=SAMPLERS[m.sampler](**({"n_leapfrog": m.n_leapfrog} if m.sampler == "hmc" else {})),
                chains=chains,
                space=m.space,
                key=seed,
                progress=progress,
                throw=False,
            ),
        )
    return out


def usable(estimate: KernelEstimate) -> bool:
    """Kernels fit to measure: a success, or sampled chains that are flagged but finished."""
    return estimate.result in (Result.success, Result.diagnostics_failed)


@limit_blas_threads
def run(
    config: ExperimentConfig, status: Callable[[str], None] = lambda message: None, progress: bool = True
) -> xr.Dataset:
    """Compute every requested kernel of every layer and collect them in one Dataset.

    Variables: kernel (estimator, layer, row, col) on train + test inputs, cka and cka_se
    (estimator, layer), test_error and test_mse (estimator); attrs: convergence, diagnostics, timings.
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

    nngp = timed("nngp", lambda: nngp_kernels(spec, data.X, data.X_test))  # the one NNGP stack of the run
    estimates = estimate_all(config, spec, data, nngp, timed, progress)
    kernels = {"nngp": nngp, **{name: e.kernels for name, e in estimates.items()}}
    ok = {"nngp": True, **{name: usable(e) for name, e in estimates.items()}}
    cka_se = {name: _cka_se(estimates.get(name), data.Y, spec.depth) for name in kernels}
    names = list(kernels)
    errors = {name: _errors(kernels[name] if ok[name] else None, data, spec.kappa) for name in names}
    nan = np.full(spec.depth + 1, np.nan)
    return xr.Dataset(
        {
            "kernel": (("estimator", "layer", "row", "col"), np.stack([kernels[k] for k in names])),
            "cka": (
                ("estimator", "layer"),
                np.stack([cka_layers(kernels[k], data.Y) if ok[k] else nan for k in names]),
            ),
            "cka_se": (("estimator", "layer"), np.stack([cka_se[k] for k in names])),
            "test_error": (("estimator",), [errors[k]["class_error"] for k in names]),
            "test_mse": (("estimator",), [errors[k]["mse"] for k in names]),
            "Y": (("train", "output"), data.Y),
        },
        coords={
            "estimator": names,
            "layer": np.arange(spec.depth + 1),
            "row": np.arange(len(nngp[0])),
            "col": np.arange(len(nngp[0])),
        },
        attrs={
            **_diagnostics(estimates, data),
            "name": config.name,
            "data": data.name,
            "n_train": data.n_train,
            "timings": json.dumps(timings),
            "config": config.model_dump_json(),
            "versions": json.dumps(versions()),
        },
    )


def _cka_se(estimate: KernelEstimate | None, Y, depth: int) -> np.ndarray:
    """SE of the CKA of every layer from the estimator's own set of estimates: batch means (sampled,
    perturbative), leave-one-batch-out estimates (reweighted) or replicas (MAP); zero where the
    kernels are exact (NNGP, linear phi, linear_exact), NaN where a Monte Carlo estimate has none."""
    info = getattr(estimate, "info", None)
    for field, kind in (
        ("batch_kernels", "batches"),
        ("jackknife_kernels", "jackknife"),
        ("replica_kernels", "replicas"),
    ):
        if getattr(info, field, None) is not None:
            return cka_layers_se(getattr(info, field), Y, kind=kind)
    if estimate is not None and estimate.se is not None and estimate.estimator != "linear_exact":
        return np.full(depth + 1, np.nan)  # a Monte Carlo estimate without its set of estimates
    return np.zeros(depth + 1)


def _diagnostics(estimates: dict, data) -> dict:
    """Convergence and sampler diagnostics as flat Dataset attributes."""
    attrs = {}
    if "perturbative" in estimates:
        info = estimates["perturbative"].info
        attrs["perturbative_n_samples"] = int(info.n_samples)
        if info.rtol_met is not None:
            attrs["perturbative_rtol_met"] = int(info.rtol_met)
    if "map" in estimates:
        est = estimates["map"]
        attrs.update(
            map_converged=int(est.ok),
            map_method=est.info.tilted + (" (ESS fallback)" if est.info.fallback else ""),
            map_n_iter=est.info.n_iter,
            map_residual=est.info.residual,
            map_message=est.message or est.info.fallback or "converged",
            map_n_samples=int(est.info.n_samples),
        )
        if est.info.rtol_met is not None:
            attrs["map_rtol_met"] = int(est.info.rtol_met)
    if "reweighted" in estimates:
        est = estimates["reweighted"]
        attrs.update(
            reweighted_ok=int(est.ok),
            reweighted_ess=float(est.info.ess),
            reweighted_var_log_weight=float(est.info.var_log_weight),
            reweighted_n_samples=int(est.info.n_samples),
            reweighted_message=est.message or "ok",
            reweighted_method=est.info.method,
        )
        if est.info.smc_runs:  # tempered SMC ran: its temperature ladders (runs separated by |), worst ESS
            runs = est.info.smc_runs
            attrs.update(
                reweighted_temperatures=" | ".join(
                    ", ".join(f"{b:.3g}" for b in r.temperatures) for r in runs
                ),
                reweighted_final_ess=float(min(r.final_ess for r in runs)),
                reweighted_n_particles=int(sum(r.n_particles for r in runs)),
            )
    if "linear_exact" in estimates:
        est = estimates["linear_exact"]
        attrs.update(linear_exact_ok=int(est.ok), linear_exact_message=est.message or "ok")
    if "sampled" in estimates:
        est = estimates["sampled"]
        info = est.info
        attrs.update(
            sampler=type(info.sampler).__name__.lower(),
            sampled_space=info.space,
            sampled_ok=int(est.ok),
            sampled_warnings="; ".join(info.warnings),
            rhat_cka=float(np.nanmax(info.rhat_cka)),
            ess_cka=float(np.min(info.ess_cka)),
            acceptance=float(info.acceptance.mean()),
        )
        if info.f_test is not None and data.Y_test is not None:  # the sampled networks' own predictions
            attrs["sampled_networks_test_error"] = test_error(info.f_test, data.Y_test).get(
                "class_error", np.nan
            )
    return attrs


def _errors(kernels, data, kappa) -> dict:
    if kernels is None or data.X_test is None or data.Y_test is None:
        return {"class_error": np.nan, "mse": np.nan}
    out = test_error(kernel_predict(kernels[-1], data.Y, kappa), data.Y_test)
    return {"class_error": out.get("class_error", np.nan), "mse": out["mse"]}
