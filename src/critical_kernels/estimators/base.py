"""The one estimator convention (DESIGN.md): every estimator returns a KernelEstimate.

`estimate(spec, X, Y, X_test=None, *, options, key, throw=True) -> KernelEstimate` with the
kernels of every layer on train + test rows, their standard errors (None only where exact), a
`Result` whose advice says what to change, and a small method-specific `info` NamedTuple.
"""

from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..errors import ConvergenceError, DiagnosticsError, EstimateError, NotPositiveDefiniteError


class Result(enum.Enum):
    """Outcome of an estimator; each failure's `advice` says what to change (diffrax-style RESULTS)."""

    success = "success"
    max_steps_reached = (
        "the iteration did not reach its tolerance: increase max_steps, lower damping, add annealing "
        "stages (widths=...), or increase the width or kappa"
    )
    ess_collapsed = (
        "the effective sample size collapsed: use more n_samples, a larger width or kappa, or another "
        "tilted-average method (SecondCumulant)"
    )
    not_positive_definite = (
        "a kernel left the positive-definite cone: add annealing stages, lower damping, or increase the "
        "width or kappa"
    )
    quadrature_inaccurate = "the quadrature error bound exceeds its tolerance: raise n_quad"
    diagnostics_failed = (
        "the chains failed their diagnostics (R-hat, acceptance): run more warm-up and samples, more "
        "chains, or another sampler (HMC, NUTS)"
    )

    @property
    def ok(self) -> bool:
        return self is Result.success

    @property
    def advice(self) -> str:
        return "" if self.ok else self.value

    @property
    def error(self) -> type[EstimateError]:
        """The exception `throw=True` raises for this result."""
        return {
            Result.not_positive_definite: NotPositiveDefiniteError,
            Result.diagnostics_failed: DiagnosticsError,
        }.get(self, ConvergenceError)


@dataclass(frozen=True)
class KernelEstimate:
    """Kernels of every layer from one estimator, with standard errors and a result.

    Attributes:
      estimator: "perturbative", "map", "sampled", "exact", "linear_exact", ...
      kernels: (L+1, P', P') NumPy kernels on train + test rows (training rows first); layer 0 is
        the input kernel.
      se: standard errors of the same shape, or None where the estimate is exact.
      result: `Result.success` or the failure; `message` says what happened and what to change.
      info: method-specific NamedTuple (iterations, residual, ESS, acceptance, R-hat, jitter, ...).
    """

    estimator: str
    kernels: np.ndarray
    se: np.ndarray | None
    result: Result
    info: Any
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.result.ok

    def raise_for_result(self) -> KernelEstimate:
        """Raise the result's exception (carrying this estimate as `.estimate`) unless it succeeded."""
        if not self.ok:
            raise self.result.error(self.message, estimate=self)
        return self


def finish(
    estimator: str,
    kernels,
    se,
    info: NamedTuple,
    *,
    result: Result = Result.success,
    detail: str = "",
    advice: str | None = None,
    throw: bool = True,
    jitter: float = 0.0,
) -> KernelEstimate:
    """The KernelEstimate of an estimator: warn about recorded jitter, raise on failure if `throw`.
    `advice` replaces the result's generic advice where the estimator knows better."""
    if jitter > 0:
        warnings.warn(
            f"{estimator}: a kernel needed Cholesky jitter {jitter:.3g} to be positive definite "
            "(recorded in info.jitter)",
            stacklevel=3,
        )
    advice = result.advice if advice is None else advice
    message = "" if result.ok else f"{estimator}: {detail + '; ' if detail else ''}{advice}"
    out = KernelEstimate(
        estimator, np.asarray(kernels), None if se is None else np.asarray(se), result, info, message
    )
    return out.raise_for_result() if throw else out
