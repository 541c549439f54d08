"""Method options: small frozen objects instead of long keyword lists and string switches."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError


def _check(name: str, value, *, low=0.0, integer=False, inclusive=False) -> None:
    bad = (integer and (isinstance(value, bool) or int(value) != value)) or not (
        value >= low if inclusive else value > low
    )
    if bad:
        kind = "an integer" if integer else "a number"
        raise InputError(f"{name}: must be {kind} {'>=' if inclusive else '>'} {low}, got {value!r}")


@dataclass(frozen=True)
class MonteCarlo:
    """Plain Monte Carlo with common random numbers (V contractions, T5): n_samples per layer,
    split into n_batches blocks whose spread gives the standard error.

    rtol: keep drawing further rounds of samples until the standard error of the CKA adaptation
    (CKA - CKA_NNGP) of every hidden layer is at most rtol times that adaptation (a layer adapting
    less than a tenth of the most-adapting one: rtol times that tenth; `metrics.se_target`), or
    max_samples (default max(131072, n_samples)) are used (info says which); None: exactly n_samples."""

    n_samples: int = 4096
    n_batches: int = 16
    rtol: float | None = 0.02
    max_samples: int | None = None

    def __post_init__(self):
        _check("n_samples", self.n_samples, integer=True)
        _check("n_batches", self.n_batches, low=2, integer=True, inclusive=True)
        if self.n_samples < 2 * self.n_batches:
            raise InputError(
                f"n_samples: need at least 2 per batch ({2 * self.n_batches}), got {self.n_samples}"
            )
        if self.rtol is not None:
            _check("rtol", self.rtol)
        if self.max_samples is None:  # the default budget: 131072, or n_samples if that is larger
            object.__setattr__(self, "max_samples", max(131072, self.n_samples))
        _check("max_samples", self.max_samples, low=self.n_samples, integer=True, inclusive=True)


@dataclass(frozen=True)
class ExactGaussian:
    """Tilted averages of linear networks in closed form (T9-T10): the tilted measure is Gaussian."""


@dataclass(frozen=True)
class ImportanceSampling:
    """Self-normalised importance sampling of the tilted measures with common random numbers,
    the closed-form untilted averages as control variates; fails when the effective sample
    fraction drops below min_ess. adaptive: draw from a defensive mixture of the untilted Gaussian
    (1/4 of the draws) and a Gaussian moment-matched to each tilted measure, re-estimated between
    annealing stages (survives strong tilts), instead of from the untilted Gaussian alone."""

    n_samples: int = 4096
    min_ess: float = 0.05
    adaptive: bool = True

    def __post_init__(self):
        _check("n_samples", self.n_samples, integer=True)
        _check("min_ess", self.min_ess)


@dataclass(frozen=True)
class SecondCumulant:
    """The tilt expanded to first order: C = mu(C') + V[C~] (THEORY section 4), by Monte Carlo."""

    n_samples: int = 4096

    def __post_init__(self):
        _check("n_samples", self.n_samples, integer=True)


@dataclass(frozen=True)
class Fallback:
    """Try `first`; if its effective sample size collapses, solve again with `then`."""

    first: ImportanceSampling = ImportanceSampling()
    then: SecondCumulant = SecondCumulant()


@dataclass(frozen=True)
class Anderson:
    """Damped Anderson iteration of a fixed point x = F(x): stop when |F(x) - x| <= rtol |F(x)| + atol."""

    rtol: float = 1e-8
    atol: float = 1e-14
    max_steps: int = 300
    damping: float = 0.5
    memory: int = 5

    def __post_init__(self):
        _check("rtol", self.rtol, inclusive=True)
        _check("atol", self.atol, inclusive=True)
        _check("max_steps", self.max_steps, integer=True)
        _check("damping", self.damping)
        _check("memory", self.memory, integer=True, inclusive=True)


@dataclass(frozen=True)
class TemperedSMC:
    """Tempered SMC from the saddle point's measure q to the posterior (`reweighted_kernels`, THEORY
    section 8): n_runs independent runs (their spread is the standard error) of n_particles each;
    target_ess: the fraction of particles each temperature step keeps effective; n_mcmc HMC moves of
    n_leapfrog steps per temperature (initial step_size, then adapted); at beta = 1, n_final more moves
    whose mean kernels are the run's estimate; n_mh Metropolis-Hastings steps
    per neuron for the initial draws from q; n_w Monte Carlo points for W~; at most max_temperatures
    steps; batch_size particles per compiled batch (0: all at once; bounds memory)."""

    n_particles: int = 128
    n_runs: int = 8
    target_ess: float = 0.5
    n_mcmc: int = 10
    n_leapfrog: int = 8
    n_final: int = 20
    step_size: float = 0.1
    n_mh: int = 20
    n_w: int = 256
    max_temperatures: int = 100
    batch_size: int = 0

    def __post_init__(self):
        for name in ("n_particles", "n_mcmc", "n_leapfrog", "n_final", "n_mh", "n_w", "max_temperatures"):
            _check(name, getattr(self, name), integer=True)
        _check("n_runs", self.n_runs, low=2, integer=True, inclusive=True)
        _check("batch_size", self.batch_size, integer=True, inclusive=True)
        _check("step_size", self.step_size)
        if not 0 < self.target_ess < 1:
            raise InputError(f"target_ess: must lie in (0, 1), got {self.target_ess!r}")


@dataclass(frozen=True)
class MALA:
    """Metropolis-adjusted Langevin; step size tuned by dual averaging towards target_accept."""

    step_size: float = 0.1
    target_accept: float = 0.57


@dataclass(frozen=True)
class HMC:
    """Hamiltonian Monte Carlo with n_leapfrog integration steps."""

    n_leapfrog: int = 16
    step_size: float = 0.1
    target_accept: float = 0.75

    def __post_init__(self):
        _check("n_leapfrog", self.n_leapfrog, integer=True)


@dataclass(frozen=True)
class NUTS:
    """No-U-turn sampler."""

    step_size: float = 0.1
    target_accept: float = 0.8


@dataclass(frozen=True)
class Langevin:
    """Unadjusted Langevin (Euler-Maruyama, no accept step) at a fixed step size: biased, an option only."""

    step_size: float = 1e-3


SAMPLERS = {"mala": MALA, "hmc": HMC, "nuts": NUTS, "langevin": Langevin}


@dataclass(frozen=True)
class Chains:
    """How long to sample: `chains` vmapped chains, `warmup` adaptation steps, `n_samples` steps per
    chain after warm-up with a draw recorded every `thin` steps, in `n_batches` compiled chunks
    (the batch means behind the standard errors); runs whose CKA R-hat exceeds rhat_max fail."""

    chains: int = 4
    warmup: int = 1000
    n_samples: int = 1000
    thin: int = 10
    n_batches: int = 10
    rhat_max: float = 1.01

    def __post_init__(self):
        for name in ("chains", "n_samples", "thin", "n_batches"):
            _check(name, getattr(self, name), integer=True)
        _check("warmup", self.warmup, integer=True, inclusive=True)
        if self.n_samples < self.thin * self.n_batches:
            raise InputError(
                f"n_samples: need at least thin * n_batches = {self.thin * self.n_batches} steps, "
                f"got {self.n_samples}"
            )

    @property
    def draws_per_batch(self) -> int:
        return self.n_samples // (self.thin * self.n_batches)
