"""critical_kernels: kernels of finite-width Bayesian deep networks against the NNGP.

Importing the package has two process-wide side effects: JAX switches to float64 (x64), and XLA's
CPU compiler gets `--xla_cpu_enable_concurrency_optimized_scheduler=false` (see _SAFE_SCHEDULE).
Import order follows the data flow: spec -> activations -> NNGP -> criticality -> likelihood ->
fluctuations -> estimators -> metrics.
"""

import os
import warnings

import jax
from jax._src import xla_bridge

# jaxlib 0.10 splits a batched LAPACK call (a vmap over chains or particles) over XLA's CPU thread
# pool and waits for the pieces from a pool thread; with the concurrency-optimised schedule, as many
# such calls as the pool has threads can run at once and the process hangs at 0 % CPU. XLA's
# default schedule does not run them together (reproducer in the README's known problems).
_SAFE_SCHEDULE = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def _use_safe_schedule() -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_enable_concurrency_optimized_scheduler" in flags:
        return  # the user chose
    if xla_bridge.backends_are_initialized():
        warnings.warn(
            "JAX was used before critical_kernels was imported, so XLA_FLAGS can no longer take "
            f"{_SAFE_SCHEDULE}; batched Cholesky on CPU may deadlock (jaxlib < 0.11.2). Import "
            "critical_kernels first or set XLA_FLAGS yourself.",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    os.environ["XLA_FLAGS"] = f"{flags} {_SAFE_SCHEDULE}".strip()


_use_safe_schedule()
jax.config.update("jax_enable_x64", True)  # float64 everywhere (DESIGN: Numerics)

from . import datasets  # noqa: E402
from .activations import Activation, get_activation  # noqa: E402
from .criticality import CriticalPoint, critical_gain, criticality  # noqa: E402
from .errors import (  # noqa: E402
    ConvergenceError,
    CriticalKernelsError,
    DiagnosticsError,
    EstimateError,
    InputError,
    NotPositiveDefiniteError,
    SpecError,
)
from .estimators import (  # noqa: E402
    HMC,
    MALA,
    NUTS,
    Anderson,
    Chains,
    ExactGaussian,
    Fallback,
    ImportanceSampling,
    KernelEstimate,
    Langevin,
    MonteCarlo,
    Result,
    SecondCumulant,
    TemperedSMC,
    exact_posterior_kernels,
    linear_posterior_kernels,
    perturbative_kernels,
    reweighted_kernels,
    sample_posterior,
    solve_map,
)
from .fluctuations import KernelCovariance, kernel_covariance, sample_prior_kernels  # noqa: E402
from .likelihood import kernel_predict, likelihood_gradient, log_evidence  # noqa: E402
from .metrics import cka, cka_layers, test_error  # noqa: E402
from .nngp import Response, layer_responses, mu, nngp_kernels, response  # noqa: E402
from .spec import NetworkSpec  # noqa: E402

__version__ = "0.4.0"

__all__ = [
    "NetworkSpec",
    "Activation",
    "get_activation",
    "nngp_kernels",
    "mu",
    "response",
    "layer_responses",
    "Response",
    "criticality",
    "critical_gain",
    "CriticalPoint",
    "kernel_covariance",
    "KernelCovariance",
    "sample_prior_kernels",
    "log_evidence",
    "likelihood_gradient",
    "kernel_predict",
    "KernelEstimate",
    "Result",
    "perturbative_kernels",
    "solve_map",
    "sample_posterior",
    "exact_posterior_kernels",
    "linear_posterior_kernels",
    "reweighted_kernels",
    "MonteCarlo",
    "ExactGaussian",
    "ImportanceSampling",
    "SecondCumulant",
    "TemperedSMC",
    "Fallback",
    "Anderson",
    "MALA",
    "HMC",
    "NUTS",
    "Langevin",
    "Chains",
    "cka",
    "cka_layers",
    "test_error",
    "datasets",
    "CriticalKernelsError",
    "SpecError",
    "InputError",
    "EstimateError",
    "NotPositiveDefiniteError",
    "ConvergenceError",
    "DiagnosticsError",
]
