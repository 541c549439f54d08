"""The one estimator convention (DESIGN.md): every estimator returns a KernelEstimate.

`estimate(spec, X, Y, X_test=None, *, options, key, throw=True) -> KernelEstimate` with the
kernels of every layer on train + test rows, their standard errors (None only where exact), a
`Result` whose advice says what to change, the method that produced the kernels, the set of
estimates behind the standard errors, and a small method-specific `info` NamedTuple.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..errors import (
    ConvergenceError,
    DiagnosticsError,
    EstimateError,
    InputError,
    NotPositiveDefiniteError,
    warn_user,
)
from ..numerics import check_inputs, check_se_kind, check_targets, standard_error
from ..predictive import Predictive
from ..spec import NetworkSpec
from .options import Options


class Result(enum.Enum):
    """Outcome of an estimator; each failure's `advice` says what to change (diffrax-style RESULTS)."""

    success = "success"
    max_steps_reached = (
        "the iteration did not reach its tolerance: raise Anderson.max_steps, lower Anderson.damping or "
        "add annealing stages (Anderson.widths; config table [methods.solver]), or raise the width or kappa"
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


class Estimates(NamedTuple):
    """The set of estimates behind a standard error: `kernels` (B, L+1, P', P') and their `kind`,
    "batches" (i.i.d. block estimates whose mean is the estimate), "jackknife" (leave-one-batch-out
    estimates) or "replicas" (independent full estimates, the estimate one of them). The SE of any
    smooth function f of the kernels (e.g. the CKA) is `numerics.standard_error` of f over them."""

    kind: str
    kernels: np.ndarray

    def se(self, values=None) -> np.ndarray:
        """SE of `values` (B, ...) computed from these estimates (default: the kernels themselves)."""
        return standard_error(self.kernels if values is None else values, self.kind)


@dataclass(frozen=True)
class KernelEstimate:
    """Kernels of every layer from one estimator, with standard errors and a result.

    Attributes:
      estimator: "perturbative", "map", "sampled", "exact", "linear_exact", "reweighted".
      kernels: (L+1, P', P') NumPy kernels on train + test rows (training rows first); layer 0 is
        the input kernel.
      se: standard errors of the same shape, or None where the estimate is exact.
      result: `Result.success` or the failure; `message` says what happened and what to change.
      info: method-specific NamedTuple (iterations, residual, ESS, acceptance, R-hat, jitter, ...).
      message: "" on success, else what failed and what to change.
      method: the options object of the method that computed the kernels (ImportanceSampling(...),
        SecondCumulant(...), TemperedSMC(...), HMC(space="preactivation"), ...); `method.label` is its
        name in tables and legends.
      fallback: (the options of the method abandoned for `method`, why), or None.
      estimates: the set of estimates behind `se` (None where the estimate is exact or has none).
      predictive: the posterior predictive of the output on the test rows (T21, `Predictive`), None
        without test rows.
    """

    estimator: str
    kernels: np.ndarray
    se: np.ndarray | None
    result: Result
    info: Any
    message: str = ""
    method: Options | None = None
    fallback: tuple[Options, str] | None = None
    estimates: Estimates | None = None
    predictive: Predictive | None = None

    def __post_init__(self):
        if self.estimates is not None:
            check_se_kind(self.estimates.kind)

    @property
    def ok(self) -> bool:
        return self.result.ok

    def raise_for_result(self) -> KernelEstimate:
        """Raise the result's exception (carrying this estimate as `.estimate`) unless it succeeded."""
        if not self.ok:
            raise self.result.error(self.message, estimate=self)
        return self


class Outcome(NamedTuple):
    """How an estimator ended, for `finish`: the result, what happened (`detail`), advice that
    replaces the result's generic advice where the estimator knows better, the method's options and
    the fallback (KernelEstimate.method, .fallback)."""

    result: Result = Result.success
    detail: str = ""
    advice: str | None = None
    method: Options | None = None
    fallback: tuple[Options, str] | None = None


def warn_jitter(estimator: str, jitter: float) -> None:
    """The one warning that a kernel needed Cholesky jitter (recorded in the estimate's info)."""
    if jitter > 0:
        warn_user(
            f"{estimator}: a kernel needed Cholesky jitter {jitter:.3g} to be positive definite "
            "(recorded in info.jitter)"
        )


def finish(
    estimator: str,
    kernels,
    se,
    info: NamedTuple,
    outcome: Outcome = Outcome(),
    *,
    estimates: Estimates | None = None,
    predictive: Predictive | None = None,
    throw: bool = True,
) -> KernelEstimate:
    """The KernelEstimate of an estimator; raise on failure if `throw`."""
    result, detail = outcome.result, outcome.detail
    advice = result.advice if outcome.advice is None else outcome.advice
    message = "" if result.ok else f"{estimator}: {detail + '; ' if detail else ''}{advice}"
    out = KernelEstimate(
        estimator,
        np.asarray(kernels),
        None if se is None else np.asarray(se),
        result,
        info,
        message,
        method=outcome.method,
        fallback=outcome.fallback,
        estimates=estimates,
        predictive=predictive,
    )
    return out.raise_for_result() if throw else out


class Problem(NamedTuple):
    """One estimator call's validated data: the network, every row X_all (P', d) with the training rows
    first, the training targets Y (P, D) and P."""

    spec: NetworkSpec
    X_all: np.ndarray
    Y: np.ndarray
    P: int


def prepare(spec, X, Y, X_test=None, **options) -> Problem:
    """The one prologue of every estimator: each option `name=(value, accepted types)`, then the spec,
    the inputs and the targets, in that order; InputError names the first problem in one line."""
    for name, (value, types) in options.items():
        types = types if isinstance(types, tuple) else (types,)
        if not isinstance(value, types):
            wanted = " or ".join(f"{t.__name__}(...)" for t in types)
            raise InputError(f"{name}: expected {wanted}, got {value!r}")
    if not isinstance(spec, NetworkSpec):
        raise InputError(f"spec: expected a NetworkSpec, got {type(spec).__name__}")
    X_all = check_inputs(X, X_test)
    P = np.shape(X)[0]
    return Problem(spec, X_all, check_targets(Y, P, spec.n_out), P)
