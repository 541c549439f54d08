"""Estimators of the kernels of every layer, all returning KernelEstimate (DESIGN.md)."""

from .base import Estimates, KernelEstimate, Result
from .exact_tiny import ExactInfo, exact_posterior_kernels
from .linear_exact import LinearExactInfo, linear_posterior_kernels
from .map import MAPInfo, solve_map
from .network import Network
from .options import (
    HMC,
    MALA,
    NUTS,
    SAMPLERS,
    Anderson,
    Chains,
    ExactGaussian,
    Fallback,
    ImportanceSampling,
    Langevin,
    MonteCarlo,
    PriorImportance,
    Quadrature,
    Reweighting,
    SecondCumulant,
    TemperedSMC,
)
from .perturbative import PerturbativeInfo, linear_output_shift, perturbative_kernels
from .preactivation import Preactivation
from .reweighted import ReweightedInfo, reweighted_kernels
from .sampled import SPACES, SamplingInfo, sample_posterior
from .scalar import ScalarInfo, scalar_renormalised_kernels
from .smc import SMCRun

__all__ = [
    "KernelEstimate",
    "Result",
    "Estimates",
    "perturbative_kernels",
    "PerturbativeInfo",
    "linear_output_shift",
    "solve_map",
    "MAPInfo",
    "sample_posterior",
    "SamplingInfo",
    "exact_posterior_kernels",
    "ExactInfo",
    "linear_posterior_kernels",
    "LinearExactInfo",
    "reweighted_kernels",
    "ReweightedInfo",
    "scalar_renormalised_kernels",
    "ScalarInfo",
    "Network",
    "Preactivation",
    "SPACES",
    "MonteCarlo",
    "Reweighting",
    "PriorImportance",
    "Quadrature",
    "ExactGaussian",
    "ImportanceSampling",
    "SecondCumulant",
    "TemperedSMC",
    "SMCRun",
    "Fallback",
    "Anderson",
    "MALA",
    "HMC",
    "NUTS",
    "Langevin",
    "SAMPLERS",
    "Chains",
]
