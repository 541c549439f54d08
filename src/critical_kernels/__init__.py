"""critical_kernels: kernels of finite-width Bayesian deep networks against the NNGP.

Importing the package switches JAX to float64 (x64), its one process-wide side effect. The public
names below are loaded on first use (PEP 562), so `import critical_kernels` starts no JAX backend and
`use_one_xla_thread()` (runtime.py: the XLA setting that avoids a jaxlib < 0.11.2 deadlock) can still
take effect when a script calls it right after the import. Names are grouped by stage, in data-flow
order: spec -> activations -> NNGP -> criticality -> likelihood -> fluctuations -> estimators -> metrics.
"""

import importlib

import jax

jax.config.update("jax_enable_x64", True)  # float64 everywhere (DESIGN: Numerics), before any module loads

# eager: the function `criticality` shadows its module
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
from .runtime import use_one_xla_thread  # noqa: E402

__version__ = "0.6.0"

_LAZY = {  # module -> the public names it provides, loaded on first access
    "spec": ("NetworkSpec",),
    "activations": ("Activation", "get_activation"),
    "nngp": ("nngp_kernels", "mu", "response", "layer_responses", "Response"),
    "fluctuations": ("kernel_covariance", "KernelCovariance", "sample_prior_kernels"),
    "likelihood": ("log_evidence", "likelihood_gradient", "kernel_predict"),
    "numerics": ("standard_error",),
    "estimators": (
        "KernelEstimate",
        "Result",
        "Estimates",
        "perturbative_kernels",
        "solve_map",
        "sample_posterior",
        "exact_posterior_kernels",
        "linear_posterior_kernels",
        "reweighted_kernels",
        "MonteCarlo",
        "Reweighting",
        "PriorImportance",
        "Quadrature",
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
    ),
    "metrics": ("cka", "cka_layers", "test_error"),
}
_SOURCE = {name: module for module, names in _LAZY.items() for name in names}
_SUBMODULES = ("datasets", "experiments", "plots", *_LAZY)  # every module also by its own name

__all__ = [
    *(name for names in _LAZY.values() for name in names),
    "datasets",
    "experiments",
    "plots",
    "criticality",
    "critical_gain",
    "CriticalPoint",
    "use_one_xla_thread",
    "CriticalKernelsError",
    "SpecError",
    "InputError",
    "EstimateError",
    "NotPositiveDefiniteError",
    "ConvergenceError",
    "DiagnosticsError",
]


def __getattr__(name: str):
    """Load a public name or submodule on first access (PEP 562); later lookups find it directly."""
    if name in _SOURCE:
        # dynamic on purpose: importing the estimators imports BlackJAX, which starts JAX's backend
        value = getattr(importlib.import_module(f".{_SOURCE[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'critical_kernels' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
