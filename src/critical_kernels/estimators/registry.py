"""What each estimator is, as a value: one `Estimator` record per estimator, kept in one registry.

Runs, reports, sweeps, figures and the CLI iterate the registry and never name an estimator, so an
estimator is its own module plus one `register` line (below, or in a user's own code).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import KernelEstimate, Result
from .linear_exact import linear_posterior_kernels
from .map import solve_map
from .perturbative import perturbative_kernels
from .reweighted import reweighted_kernels
from .sampled import sample_posterior
from .scalar import scalar_renormalised_kernels


@dataclass(frozen=True)
class Estimator:
    """One estimator as a value.

    name: KernelEstimate.estimator, the config switch `methods.NAME = true` and the Dataset's
      estimator coordinate.
    label: its name in tables and legends; where `show_method`, the method's label follows in brackets.
    function: `(spec, X, Y, X_test, *, <options>, key, throw) -> KernelEstimate` (no `key` where
      `takes_key` is false).
    options: the keyword options of one call, from a config's [methods] section (`MethodsConfig`),
      the spec and the estimates of the run so far (the reweighted estimator reuses the MAP's saddle).
    failure: what a table adds where it did not succeed ("not converged", "failed").
    reference: ground truth; where it failed its diagnostics, reports say it is no reference.
    keeps_flagged: a `diagnostics_failed` estimate still carries kernels fit to measure (finished
      chains), so its CKA and test error are computed and flagged instead of NaN.
    default: computed unless a config turns it off.
    activations: the activations it handles (None: every one).
    remedy: what a report suggests where it failed, beyond the estimate's own advice.
    """

    name: str
    label: str
    function: Callable[..., KernelEstimate]
    options: Callable[[Any, Any, dict], dict]
    failure: str = "failed"
    show_method: bool = True
    reference: bool = False
    keeps_flagged: bool = False
    default: bool = False
    takes_key: bool = True
    activations: tuple[str, ...] | None = None
    remedy: str = ""

    def usable(self, estimate: KernelEstimate) -> bool:
        """Kernels fit to measure: a success, or a flagged estimate this estimator keeps."""
        flagged = self.keeps_flagged and estimate.result is Result.diagnostics_failed
        return estimate.result is Result.success or flagged

    def call(self, methods, spec, X, Y, X_test, earlier: dict, key) -> KernelEstimate:
        """One call with the options of a config's [methods] section; failures are returned, not raised."""
        keyed = {"key": key} if self.takes_key else {}
        return self.function(spec, X, Y, X_test, **self.options(methods, spec, earlier), **keyed, throw=False)


REGISTRY: dict[str, Estimator] = {}  # name -> record, in run order


def register(estimator: Estimator) -> Estimator:
    """Add (or replace) an estimator; runs compute it after those registered before it."""
    if not isinstance(estimator, Estimator):
        raise TypeError(f"register: expected an Estimator, got {estimator!r}")
    REGISTRY[estimator.name] = estimator
    return estimator


def unregister(name: str) -> None:
    REGISTRY.pop(name, None)


register(
    Estimator(
        "perturbative",
        "first order",
        perturbative_kernels,
        lambda m, spec, earlier: {"options": m.monte_carlo},
        show_method=False,
        default=True,
    )
)
register(
    Estimator(
        "map",
        "MAP",
        solve_map,
        lambda m, spec, earlier: {"tilted": m.tilted(spec), "solver": m.solver},
        failure="not converged",
        default=True,
    )
)
register(
    Estimator(
        "reweighted",
        "reweighted",
        reweighted_kernels,
        lambda m, spec, earlier: {"options": m.reweighting, "saddle": earlier.get("map")},
    )
)
register(
    Estimator(
        "linear_exact",
        "exact (linear)",
        linear_posterior_kernels,
        lambda m, spec, earlier: {"options": m.quadrature},
        show_method=False,
        takes_key=False,
        activations=("linear",),
    )
)
register(
    Estimator(
        "scalar",
        "scalar (Pacelli)",
        scalar_renormalised_kernels,
        lambda m, spec, earlier: {},
        show_method=False,
        takes_key=False,
    )
)
register(
    Estimator(
        "sampled",
        "sampled",
        sample_posterior,
        lambda m, spec, earlier: {"sampler": m.sampler_options, "chains": m.chains},
        failure="not converged",
        reference=True,
        keeps_flagged=True,
        remedy="sample longer: methods.chains.warmup, methods.chains.n_samples",
    )
)
