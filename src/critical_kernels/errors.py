"""Exceptions raised by critical_kernels; each message names the offending field. Warnings name the
user's line (`warn_user`)."""

import os
import sys
import warnings


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


class EstimateWarning(UserWarning):
    """Something about a finished estimate its user must know (a tolerance not met, jitter added);
    the command line shows these from the run's record instead (`report.run_warnings`)."""


_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def warn_user(message: str, category: type[Warning] = EstimateWarning) -> None:
    """warnings.warn attributed to the first caller outside this package (the user's line), however
    deep inside the package the warning is raised (Python < 3.12 has no skip_file_prefixes)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE + os.sep):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1)
