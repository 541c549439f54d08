"""critical_kernels: kernels of finite-width Bayesian deep networks against the NNGP.

Import order follows the data flow: spec -> activations -> NNGP -> criticality -> metrics.
"""

import jax

jax.config.update("jax_enable_x64", True)  # float64 everywhere (DESIGN: Numerics)

from . import datasets  # noqa: E402
from .activations import Activation, get_activation  # noqa: E402
from .criticality import CriticalPoint, critical_gain, criticality  # noqa: E402
from .errors import (  # noqa: E402
    ConvergenceError,
    CriticalKernelsError,
    InputError,
    NotPositiveDefiniteError,
    SpecError,
)
from .fluctuations import KernelCovariance, kernel_covariance, sample_prior_kernels  # noqa: E402
from .map_solver import MAPResult, solve_map  # noqa: E402
from .metrics import cka, cka_layers  # noqa: E402
from .nngp import Response, layer_responses, mu, nngp_kernels, response  # noqa: E402
from .perturbative import KernelResult, perturbative_kernels  # noqa: E402
from .predict import kernel_predict, test_error  # noqa: E402
from .sampling import ExactResult, PosteriorResult, exact_posterior_kernels, sample_posterior  # noqa: E402
from .spec import NetworkSpec  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "NetworkSpec",
    "Activation",
    "get_activation",
    "nngp_kernels",
    "mu",
    "response",
    "layer_responses",
    "Response",
    "kernel_covariance",
    "KernelCovariance",
    "sample_prior_kernels",
    "perturbative_kernels",
    "KernelResult",
    "solve_map",
    "MAPResult",
    "kernel_predict",
    "test_error",
    "sample_posterior",
    "PosteriorResult",
    "exact_posterior_kernels",
    "ExactResult",
    "criticality",
    "critical_gain",
    "CriticalPoint",
    "cka",
    "cka_layers",
    "datasets",
    "CriticalKernelsError",
    "SpecError",
    "InputError",
    "NotPositiveDefiniteError",
    "ConvergenceError",
]
