"""Method options: small frozen objects instead of long keyword lists and string switches.

Every knob of every estimator lives in one of these objects. Each field declares its rule next to
its default (`_field`), and one validator (`Options.__post_init__`) checks every rule, so a bad
value fails with one line naming the class and the field, whether it came from Python or from a
config file (`experiments.config` builds these same objects from its tables with `build`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import InputError


class OptionError(InputError):
    """A bad option value: `owner` (class name), `field` and `reason` name what is wrong."""

    def __init__(self, owner: str, name: str, reason: str):
        super().__init__(f"{owner}.{name}: {reason}")
        self.owner, self.field, self.reason = owner, name, reason


@dataclass(frozen=True)
class Rule:
    """What a field accepts: kind "int", "number", "flag", "choice", "ints" (a tuple of ints) or
    "option" (an instance of `types`); numbers within low/high (inclusive or not); optional: None too."""

    kind: str
    low: float | None = None
    high: float | None = None
    inclusive: bool = False
    optional: bool = False
    choices: tuple = ()
    types: tuple = ()

    def check(self, value) -> str | None:
        """None if `value` passes, else the reason it fails."""
        if value is None:
            return None if self.optional else f"must be {self.describe()}, got None"
        ok = {
            "int": isinstance(value, numbers.Integral) and not isinstance(value, bool),
            "number": isinstance(value, numbers.Real)
            and not isinstance(value, bool)
            and math.isfinite(value),
            "flag": isinstance(value, bool),
            "choice": value in self.choices,
            "ints": isinstance(value, tuple) and all(_is_int(v) and v >= 1 for v in value) and value != (),
            "option": isinstance(value, self.types),
            "path": isinstance(value, (str, os.PathLike)) and str(value) != "",
        }[self.kind]
        if ok and self.kind in ("int", "number"):
            ok = self._in_range(value)
        return None if ok else f"must be {self.describe()}, got {value!r}"

    def _in_range(self, value) -> bool:
        low_ok = self.low is None or (value >= self.low if self.inclusive else value > self.low)
        high_ok = self.high is None or (value <= self.high if self.inclusive else value < self.high)
        return bool(low_ok and high_ok)

    def describe(self) -> str:
        kind = {
            "int": "an integer",
            "number": "a number",
            "flag": "true or false",
            "choice": "one of " + ", ".join(map(repr, self.choices)),
            "ints": "a list of positive integers",
            "option": " or ".join(f"{t.__name__}(...)" for t in self.types),
            "path": "a file path",
        }[self.kind]
        if self.kind in ("int", "number") and (self.low is not None or self.high is not None):
            ge, le = (">=", "<=") if self.inclusive else (">", "<")
            parts = [f"{ge} {self.low:g}" if self.low is not None else ""]
            parts.append(f"{le} {self.high:g}" if self.high is not None else "")
            kind += " " + " and ".join(p for p in parts if p)
        return kind + (" or None" if self.optional else "")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _field(default, kind: str, **rule) -> Any:
    """A dataclass field with its validation rule."""
    return field(default=default, metadata={"rule": Rule(kind, **rule)})


def count(default, low: int = 1, **rule) -> Any:
    """An integer field >= low."""
    return _field(default, "int", low=low, inclusive=True, **rule)


def positive(default, **rule) -> Any:
    """A number field > 0."""
    return _field(default, "number", low=0, **rule)


class Options:
    """Base of every options object: validates each field against its rule after construction.

    An estimate keeps the options that produced it (KernelEstimate.method); `label` is the method's
    name in tables and legends, `approximation` marks a method whose kernels are an approximation of
    what its estimator estimates (reports say so), `deterministic` one without random numbers (its
    errors are no Monte Carlo errors: a CKA computed from it has no statistical SE)."""

    approximation: ClassVar[bool] = False
    deterministic: ClassVar[bool] = False

    @property
    def label(self) -> str:
        return type(self).__name__

    def __post_init__(self):
        for f in dataclasses.fields(self):  # pyright: ignore[reportArgumentType]  (every subclass is one)
            value = getattr(self, f.name)
            if isinstance(value, list):  # a list from a config file: the frozen tuple it stands for
                value = tuple(value)
                object.__setattr__(self, f.name, value)
            rule = f.metadata.get("rule")
            reason = rule.check(value) if rule is not None else None
            if reason:
                raise OptionError(type(self).__name__, f.name, reason)
        self._check_together()

    def _check_together(self) -> None:
        """Rules that tie fields together (overridden where there are any)."""

    def fail(self, name: str, reason: str):
        raise OptionError(type(self).__name__, name, reason)


def build(cls, table: dict, where: str):
    """An options object of `cls` from a config table; unknown keys get a did-you-mean, and every
    error names the config field (`where.key`)."""
    if isinstance(table, cls):
        return table
    if not isinstance(table, dict):
        raise InputError(f"{where}: expected a table of {cls.__name__} fields, got {table!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    for key in table:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (fields: {', '.join(names)})"
            raise InputError(f"{where}.{key}: unknown field of {cls.__name__}{hint}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    table = {key: _nested(fields[key], value, f"{where}.{key}") for key, value in table.items()}
    try:
        return cls(**table)
    except OptionError as err:
        raise InputError(f"{where}.{err.field}: {err.reason}") from None


def _nested(f, value, where: str):
    """A nested options table (e.g. Reweighting.tempering) built too; `false` stands for None there."""
    rule = f.metadata.get("rule")
    if rule is None or rule.kind != "option":
        return value
    if value is False and rule.optional:
        return None
    return build(rule.types[0], value, where) if isinstance(value, dict) else value


def as_dict(options) -> dict:
    """The fields of an options object as plain values (nested options as dicts, tuples as lists, a
    nested option that is None as false, other None dropped, as TOML has no None): what a config table
    holds and `build` reads back (a None whose default is not None reads back as the default; configs
    spell those as 0, e.g. rtol = 0)."""
    out = {}
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if value is None:
            if f.metadata.get("rule", Rule("int")).kind == "option":
                out[f.name] = False
            continue
        if isinstance(value, Options):
            value = as_dict(value)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


# ----------------------------------------------------------------------- Monte Carlo, first order

_DEFAULT_MAX_SAMPLES = 131072


class _SampleBudget(Options):
    """rtol / max_samples: the shared reading of a Monte Carlo budget (max_samples is an int once
    constructed)."""

    n_samples: int  # declared by each subclass's dataclass fields; here for the checker only
    max_samples: int

    def _check_together(self) -> None:
        budget: int | None = self.max_samples
        if budget is None:  # the default budget: 131072, or n_samples if that is larger
            budget = max(_DEFAULT_MAX_SAMPLES, self.n_samples)
            object.__setattr__(self, "max_samples", budget)
        if budget < self.n_samples:
            self.fail("max_samples", f"must be >= n_samples = {self.n_samples}, got {budget}")


@dataclass(frozen=True)
class MonteCarlo(_SampleBudget):
    """Plain Monte Carlo with common random numbers (V contractions, T5): n_samples per layer,
    split into n_batches blocks whose spread gives the standard error.

    rtol: keep drawing further rounds of samples until the standard error of the CKA adaptation
    (CKA - CKA_NNGP) of every hidden layer is at most rtol times that adaptation (a layer adapting
    less than a tenth of the most-adapting one: rtol times that tenth; `metrics.se_target`), or
    max_samples (default max(131072, n_samples)) are used (info says which); None: exactly n_samples."""

    n_samples: int = count(4096)
    n_batches: int = count(16, low=2)
    rtol: float | None = positive(0.02, optional=True)
    max_samples: int = count(None, optional=True)  # None: the default budget (an int once built)

    def _check_together(self) -> None:
        if self.n_samples < 2 * self.n_batches:
            self.fail("n_samples", f"need at least 2 per batch ({2 * self.n_batches}), got {self.n_samples}")
        super()._check_together()

    @property
    def label(self) -> str:
        return "Monte Carlo"


# ------------------------------------------------------------------ tilted averages (MAP, T9-T10)


@dataclass(frozen=True)
class ExactGaussian(Options):
    """Tilted averages of linear networks in closed form (T9-T10): the tilted measure is Gaussian."""

    deterministic: ClassVar[bool] = True

    @property
    def label(self) -> str:
        return "exact Gaussian"


@dataclass(frozen=True)
class ClosedForm(Options):
    """Averages in closed form (linear phi): nothing to choose; the method of an exact first order."""

    deterministic: ClassVar[bool] = True

    @property
    def label(self) -> str:
        return "closed form"


@dataclass(frozen=True)
class ImportanceSampling(_SampleBudget):
    """Self-normalised importance sampling of the tilted measures with common random numbers,
    the closed-form untilted averages as control variates; fails when the effective sample
    fraction drops below min_ess_fraction. adaptive: draw from a defensive mixture of the untilted Gaussian
    (1/4 of the draws) and a Gaussian moment-matched to each tilted measure, re-estimated between
    annealing stages (survives strong tilts), instead of from the untilted Gaussian alone.

    Standard errors: `replicas` extra solves at the final width with independent random numbers,
    warm started from the solution (0: no SE); with rtol, solve again with more samples (up to
    max_samples per layer, default max(131072, n_samples)) until the SE of the CKA adaptation of
    every hidden layer is at most `metrics.se_target` (rtol times it); None: n_samples only."""

    n_samples: int = count(4096)
    min_ess_fraction: float = _field(0.05, "number", low=0, high=1, inclusive=True)
    adaptive: bool = _field(True, "flag")
    replicas: int = count(4, low=0)
    rtol: float | None = positive(0.02, optional=True)
    max_samples: int = count(None, optional=True)  # None: the default budget (an int once built)

    @property
    def label(self) -> str:
        return "adaptive importance" if self.adaptive else "importance"


@dataclass(frozen=True)
class SecondCumulant(_SampleBudget):
    """The tilt expanded to first order: C = mu(C') + V[C~] (THEORY section 4), by Monte Carlo;
    replicas, rtol and max_samples as in ImportanceSampling."""

    n_samples: int = count(4096)
    replicas: int = count(4, low=0)
    rtol: float | None = positive(0.02, optional=True)
    max_samples: int = count(None, optional=True)  # None: the default budget (an int once built)

    approximation: ClassVar[bool] = True

    @property
    def label(self) -> str:
        return "second cumulant"


@dataclass(frozen=True)
class Fallback(Options):
    """Try `first`; if its effective sample size collapses, solve again with `then`."""

    first: ImportanceSampling = _field(ImportanceSampling(), "option", types=(ImportanceSampling,))
    then: SecondCumulant = _field(SecondCumulant(), "option", types=(SecondCumulant,))


TILTED = (ExactGaussian, ImportanceSampling, SecondCumulant, Fallback)


@dataclass(frozen=True)
class Anderson(Options):
    """Damped Anderson iteration of a fixed point x = F(x): stop when |F(x) - x| <= rtol |F(x)| + atol,
    at most max_steps sweeps per annealing stage. rtol None: 1e-8 where the map is exact (linear phi),
    else max(1e-8, 0.01 / sqrt(M)) with M Monte Carlo samples per layer (the map itself is known only
    to ~1/sqrt(M); map.stage_rtol).

    widths: the annealing schedule (T12), descending to the network's width (None: 100N, 10N, 3N, N);
    where a stage's effective sample size collapses or an iterate loses positive definiteness, the
    geometric mean width is solved first (at most 8 inserted widths)."""

    rtol: float | None = _field(None, "number", low=0, inclusive=True, optional=True)
    atol: float = _field(1e-14, "number", low=0, inclusive=True)
    max_steps: int = count(300)
    damping: float = positive(0.5)
    memory: int = count(5, low=0)
    widths: tuple[int, ...] | None = _field(None, "ints", optional=True)

    def _check_together(self) -> None:
        w = self.widths
        if w is not None and any(b > a for a, b in zip(w, w[1:], strict=False)):
            self.fail("widths", f"must descend (an annealing schedule), got {list(w)}")


# --------------------------------------------------------------------- beyond the saddle (T17)


@dataclass(frozen=True)
class TemperedSMC(Options):
    """Tempered SMC from the saddle point's measure q to the posterior (`reweighted_kernels`, THEORY
    section 8): n_runs independent runs (their spread is the standard error) of n_particles each;
    target_ess: the fraction of particles each temperature step keeps effective; n_mcmc HMC moves of
    n_leapfrog steps per temperature (initial step_size, then adapted); at beta = 1, n_final more moves
    whose mean kernels are the run's estimate; n_mh Metropolis-Hastings steps per neuron for the initial
    draws from q; n_w Monte Carlo points for W~; at most max_temperatures steps; batch_size particles
    per compiled batch (0: all at once; bounds memory). always: temper without trying plain
    reweighting first (else only when its ESS is below min_ess_count)."""

    n_particles: int = count(128)
    n_runs: int = count(8, low=2)
    target_ess: float = _field(0.5, "number", low=0, high=1)
    n_mcmc: int = count(10)
    n_leapfrog: int = count(8)
    n_final: int = count(20)
    step_size: float = positive(0.1)
    n_mh: int = count(20)
    n_w: int = count(256)
    max_temperatures: int = count(100)
    batch_size: int = count(0, low=0)
    always: bool = _field(False, "flag")

    @property
    def label(self) -> str:
        return "tempered SMC"


# Below ~50 effective networks the estimate is not trustworthy and neither is its error bar: the
# self-normalised ratio has an O(1/ESS) bias of the order of its standard error, and with 16
# jackknife batches each batch then carries ~3 effective networks, so the delete-one-batch
# jackknife is dominated by the few heaviest weights and understates the error.
DEFAULT_MIN_ESS = 50.0

# The SE the beyond-saddle estimator aims at by default: 5 % of the CKA adaptation of every hidden
# layer. On deep linear nets at P = 100 (alpha = 0.3, MNIST 0 vs 3) 2048 networks give 7.7-8 % with a
# calibrated jackknife (spread / SE 0.80 +- 0.12 over 24 keys), so the default draws a second round.
DEFAULT_REWEIGHTING_RTOL = 0.05


@dataclass(frozen=True)
class Reweighting(Options):
    """Saddle-point importance sampling (T17): n_samples networks drawn from the tilted chain q (rounded
    down to a multiple of n_batches), n_batches jackknife batches, below min_ess_count (Kish ESS) the result
    is ess_collapsed; n_w Monte Carlo points for W~ (nonlinear phi); each neuron's independence
    Metropolis-Hastings chain runs at least n_mh steps and until a layer's N chains are within mh_tol of
    the tilted measure in summed total variation (by the sampler's bound from the largest tilt weight
    among the n_w points), at most max_mh; batch_size networks per compiled call (memory bound).
    tempering: TemperedSMC(...) to move to the posterior by tempered SMC when the ESS is low (or
    always), None never.

    rtol: draw further rounds of networks until the jackknife SE of the CKA adaptation of every hidden
    layer is at most rtol times that adaptation (`metrics.se_target`), or max_samples networks are
    used (info.rtol_met says which; plain reweighting only); None: exactly n_samples."""

    n_samples: int = count(2048)
    n_batches: int = count(16, low=2)
    min_ess_count: float = _field(DEFAULT_MIN_ESS, "number", low=0, inclusive=True)
    n_mh: int = count(20)
    mh_tol: float = positive(0.01)
    max_mh: int = count(2000)
    n_w: int = count(4096)
    batch_size: int = count(64)
    tempering: TemperedSMC | None = _field(TemperedSMC(), "option", types=(TemperedSMC,), optional=True)
    rtol: float | None = positive(DEFAULT_REWEIGHTING_RTOL, optional=True)
    max_samples: int = count(32768)

    def _check_together(self) -> None:
        if self.n_samples < self.n_batches:
            self.fail("n_samples", f"must be at least n_batches = {self.n_batches}, got {self.n_samples}")
        if self.max_mh < self.n_mh:
            self.fail("max_mh", f"must be >= n_mh = {self.n_mh}, got {self.max_mh}")
        if self.max_samples < self.n_samples:
            self.fail("max_samples", f"must be >= n_samples = {self.n_samples}, got {self.max_samples}")

    @property
    def label(self) -> str:
        return "importance"


# ------------------------------------------------------------------ exact references (tiny, T18)


@dataclass(frozen=True)
class PriorImportance(Options):
    """Exact posterior of tiny problems: n_samples prior networks (rounded up to whole batches of
    `batch_size`) weighted by their marginal likelihood; below min_ess_count (Kish ESS) the result is
    ess_collapsed."""

    n_samples: int = count(100_000)
    batch_size: int = count(4096, low=4)  # >= the 4 jackknife blocks of each batch
    min_ess_count: float = _field(100.0, "number", low=0, inclusive=True)

    @property
    def label(self) -> str:
        return "prior importance"


@dataclass(frozen=True)
class Quadrature(Options):
    """Gauss-Hermite quadrature of the L readout norms of a deep linear network (T18): n_quad nodes per
    axis (None: 32, 24, 20, 14 for L = 1..4, about 1e5^(1/L) beyond); rtol: tolerance of the
    quadrature error bound relative to each layer's largest diagonal entry."""

    n_quad: int | None = count(None, low=3, high=150, optional=True)
    rtol: float = positive(1e-6)

    deterministic: ClassVar[bool] = True

    @property
    def label(self) -> str:
        return "quadrature"


# ------------------------------------------------------------------------- samplers (THEORY 7)

SPACES = ("weights", "preactivation")


@dataclass(frozen=True)
class _Sampler(Options):
    """Fields every sampler has. space: the parameterisation of the same posterior, "weights" (all
    weights and biases, whitened) or "preactivation" (T19: the readout and the weights of every layer
    with P' <= fan_in integrated out). prior: sample the prior instead (likelihood off)."""

    space: str = field(default="weights", kw_only=True, metadata={"rule": Rule("choice", choices=SPACES)})
    prior: bool = field(default=False, kw_only=True, metadata={"rule": Rule("flag")})

    @property
    def label(self) -> str:
        """ "HMC", "HMC, pre-activations", ..."""
        return type(self).__name__ + (", pre-activations" if self.space == "preactivation" else "")


_ACCEPT = dict(low=0, high=1)


@dataclass(frozen=True)
class MALA(_Sampler):
    """Metropolis-adjusted Langevin; step size tuned by dual averaging towards target_accept."""

    step_size: float = positive(0.1)
    target_accept: float = _field(0.57, "number", **_ACCEPT)


@dataclass(frozen=True)
class HMC(_Sampler):
    """Hamiltonian Monte Carlo with n_leapfrog integration steps."""

    n_leapfrog: int = count(16)
    step_size: float = positive(0.1)
    target_accept: float = _field(0.75, "number", **_ACCEPT)


@dataclass(frozen=True)
class NUTS(_Sampler):
    """No-U-turn sampler."""

    step_size: float = positive(0.1)
    target_accept: float = _field(0.8, "number", **_ACCEPT)


@dataclass(frozen=True)
class Langevin(_Sampler):
    """Unadjusted Langevin (Euler-Maruyama, no accept step) at a fixed step size: biased, an option only."""

    step_size: float = positive(1e-3)


SAMPLERS = {"mala": MALA, "hmc": HMC, "nuts": NUTS, "langevin": Langevin}


@dataclass(frozen=True)
class Chains(Options):
    """How long to sample: `chains` vmapped chains, `warmup` adaptation steps, `n_samples` steps per
    chain after warm-up with a draw recorded every `thin` steps, in `n_batches` compiled chunks
    (the batch means behind the standard errors); runs whose CKA R-hat exceeds rhat_max fail.
    progress: a progress bar over the chunks (None: on a terminal outside CI; `progress.shown`).
    checkpoint: a file for the chains' progress, written atomically after the warm-up and after each
    chunk; a killed run called again with the same arguments resumes from it and draws exactly what
    the uninterrupted run would have (a file of another run is an InputError). It is kept at the end
    (a repeated call returns at once): delete it once the result is saved. Neither progress nor
    checkpoint changes the draws."""

    chains: int = count(4)
    warmup: int = count(1000, low=0)
    n_samples: int = count(1000)
    thin: int = count(10)
    n_batches: int = count(10)
    rhat_max: float = _field(1.01, "number", low=1, inclusive=True)
    progress: bool | None = _field(None, "flag", optional=True)
    checkpoint: str | os.PathLike | None = _field(None, "path", optional=True)

    def _check_together(self) -> None:
        if self.n_samples < self.thin * self.n_batches:
            self.fail(
                "n_samples",
                f"need at least thin * n_batches = {self.thin * self.n_batches} steps, got {self.n_samples}",
            )

    @property
    def draws_per_batch(self) -> int:
        return self.n_samples // (self.thin * self.n_batches)
