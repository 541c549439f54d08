"""Ground truth: finite networks under the exact posterior (THEORY section 7)."""

from .exact import ExactResult, exact_posterior_kernels
from .network import Network
from .samplers import SAMPLERS, PosteriorResult, sample_posterior

__all__ = [
    "ExactResult",
    "exact_posterior_kernels",
    "Network",
    "PosteriorResult",
    "SAMPLERS",
    "sample_posterior",
]
