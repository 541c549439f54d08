"""Exceptions raised by critical_kernels; each message names the offending field."""


class CriticalKernelsError(ValueError):
    """Base class: bad input or a failed numerical step, with advice."""


class SpecError(CriticalKernelsError):
    """An invalid NetworkSpec field."""


class InputError(CriticalKernelsError):
    """Bad data: NaN/inf, wrong shapes, mismatched sizes."""


class EstimateError(CriticalKernelsError):
    """An estimator failed; `estimate` holds its KernelEstimate (nothing computed is lost) or None."""

    def __init__(self, message: str, estimate=None):
        super().__init__(message)
        self.estimate = estimate


class NotPositiveDefiniteError(EstimateError):
    """A kernel that should be positive definite is not, even after jitter."""


class ConvergenceError(EstimateError):
    """An iterative solver did not reach its tolerance, or its Monte Carlo collapsed."""


class DiagnosticsError(ConvergenceError):
    """Sampled chains failed their diagnostics (R-hat, acceptance)."""
