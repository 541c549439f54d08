"""critical_kernels: kernels of finite-width Bayesian deep networks against the NNGP.

Importing the package switches JAX to float64 (x64), its one process-wide side effect. The public
names below are loaded on first use (PEP 562), so `import critical_kernels` starts no JAX backend and
`use_one_xla_thread()` (runtime.py: the XLA setting that avoids a jaxlib < 0.11.2 deadlock) can still
take effect when a script calls it right after the import. Names are grouped by stage, in data-flow
order: spec -> activations -> NNGP -> criticality -> likelihood -> fluctuations -> estimators -> metrics.
"""

import ast
import importlib
from pathlib import Path
from typing import TYPE_CHECKING

import jax

jax.config.update("jax_enable_x64", True)  # float64 everywhere (DESIGN: Numerics), before any module loads

# eager: cheap, no JAX computation
from .critical_point import CriticalPoint, critical_gain, criticality  # noqa: E402
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

__version__ = "0.9.0"

if TYPE_CHECKING:  # the one list of the lazily loaded public names (read by _lazy_names)
    from . import datasets, experiments, plots
    from .activations import (
        Activation,
        get_activation,
    )
    from .estimators import (
        HMC,
        MALA,
        NUTS,
        Anderson,
        Chains,
        Estimates,
        ExactGaussian,
        Fallback,
        ImportanceSampling,
        KernelEstimate,
        Langevin,
        MonteCarlo,
        PriorImportance,
        Quadrature,
        Result,
        Reweighting,
        SecondCumulant,
        TemperedSMC,
        exact_posterior_kernels,
        linear_posterior_kernels,
        perturbative_kernels,
        reweighted_kernels,
        sample_posterior,
        scalar_renormalised_kernels,
        solve_map,
    )
    from .fluctuations import (
        KernelCovariance,
        kernel_covariance,
        sample_prior_kernels,
    )
    from .likelihood import (
        kernel_predict,
        likelihood_gradient,
        log_evidence,
    )
    from .metrics import (
        cka,
        cka_layers,
        test_error,
    )
    from .nngp import (
        Response,
        layer_responses,
        mu,
        nngp_kernels,
        response,
    )
    from .numerics import (
        standard_error,
    )
    from .predictive import (
        Predictive,
        kernel_predictive,
        test_loss,
    )
    from .spec import (
        NetworkSpec,
    )


def _lazy_names() -> dict[str, str]:
    """name -> module of every lazily loaded public name: the imports of the TYPE_CHECKING block above,
    read from this file (checkers and editors see the same block as imports; cf. SPEC 1's stubs)."""
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    checking = (
        n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING"
    )
    imports = [node for node in next(checking).body if isinstance(node, ast.ImportFrom)]
    return {alias.name: node.module or alias.name for node in imports for alias in node.names}


_LAZY = _lazy_names()  # `from . import datasets` gives datasets -> datasets: a submodule itself
_SUBMODULES = tuple(dict.fromkeys(_LAZY.values()))  # every module also by its own name
_SOURCE = {name: module for name, module in _LAZY.items() if name not in _SUBMODULES}

__all__ = [  # pyright: ignore[reportUnsupportedDunderAll]  (built from the TYPE_CHECKING block)
    *_LAZY,
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
