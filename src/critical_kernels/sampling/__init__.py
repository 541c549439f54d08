"""Ground truth: finite networks under the exact posterior (THEORY section 7)."""

from .exact import ExactResult, exact_posterior_kernels

__all__ = ["ExactResult", "exact_posterior_kernels"]
