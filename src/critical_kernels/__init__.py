"""critical_kernels: kernels of finite-width Bayesian deep networks against the NNGP.

Importing the package switches JAX to float64 (x64), its only process-wide side effect.
Import order follows the data flow: spec -> activations -> NNGP -> criticality -> likelihood ->
fluctuations -> estimators -> metrics.
"""

import jax

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
