"""critical_kernels: kernels of finite-width Bayesian deep networks against the NNGP.

Importing the package has two process-wide side effects: JAX switches to float64 (x64), and with
jaxlib < 0.11.2 XLA's CPU client gets one intra-op thread (PJRT_NPROC=1, see _one_xla_thread).
Import order follows the data flow: spec -> activations -> NNGP -> criticality -> likelihood ->
fluctuations -> estimators -> metrics.
"""

import os
import warnings

import jax
from jax._src import lib as _jaxlib
from jax._src import xla_bridge


def _one_xla_thread() -> None:
    """jaxlib < 0.11.2 splits a batched LAPACK call (Cholesky, triangular solve: a vmap over chains
    or particles) over XLA's CPU thread pool and waits for the pieces on a pool thread; when as many
    such calls run at once as the pool has threads, every thread waits and the process hangs at 0 %
    CPU. With one pool thread jaxlib runs the batch inline, so the hang cannot happen."""
    if "PJRT_NPROC" in os.environ:
        return  # the user chose the pool size (it takes precedence over NPROC in XLA)
    if tuple(_jaxlib.version[:3]) >= (0, 11, 2):
        return  # the parallel batch path is gone
    if xla_bridge.backends_are_initialized():
        warnings.warn(
            "JAX was used before critical_kernels was imported, so PJRT_NPROC=1 can no longer take "
            "effect; a batched Cholesky on CPU may deadlock (jaxlib < 0.11.2). Import "
            "critical_kernels first, or set PJRT_NPROC=1 yourself.",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    os.environ["PJRT_NPROC"] = "1"


_one_xla_thread()
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

__version__ = "0.4.1"

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
