"""Exceptions raised by critical_kernels; each message names the offending field."""


class CriticalKernelsError(ValueError):
    """Base class: bad input or a failed numerical step, with advice."""


class SpecError(CriticalKernelsError):
    """An invalid NetworkSpec field."""


class InputError(CriticalKernelsError):
    """Bad data: NaN/inf, wrong shapes, mismatched sizes."""


class NotPositiveDefiniteError(CriticalKernelsError):
    """A kernel that should be positive definite is not, even after jitter."""


class ConvergenceError(CriticalKernelsError):
    """An iterative solver did not reach its tolerance."""
