"""Options objects: one validator for every knob, one-line errors naming the class and the field, and
the same objects built from config tables (`build`) and written back (`as_dict`)."""

import dataclasses
import math

import pytest

import critical_kernels as ck
from critical_kernels.errors import InputError
from critical_kernels.estimators import options as opt

ALL = [
    opt.MonteCarlo,
    opt.ExactGaussian,
    opt.ImportanceSampling,
    opt.SecondCumulant,
    opt.Fallback,
    opt.Anderson,
    opt.TemperedSMC,
    opt.Reweighting,
    opt.PriorImportance,
    opt.Quadrature,
    opt.MALA,
    opt.HMC,
    opt.NUTS,
    opt.Langevin,
    opt.Chains,
]

BAD = [  # (class, field, value): each must be refused
    (opt.MALA, "step_size", -1.0),
    (opt.MALA, "target_accept", 3.0),
    (opt.HMC, "n_leapfrog", 0),
    (opt.NUTS, "space", "weight"),
    (opt.Langevin, "prior", 1),
    (opt.ImportanceSampling, "min_ess_fraction", 5.0),
    (opt.ImportanceSampling, "replicas", -1),
    (opt.ImportanceSampling, "adaptive", "yes"),
    (opt.SecondCumulant, "n_samples", 0),
    (opt.MonteCarlo, "n_samples", "4096"),
    (opt.MonteCarlo, "rtol", 0.0),
    (opt.MonteCarlo, "n_batches", 1),
    (opt.Anderson, "max_steps", True),
    (opt.Anderson, "damping", 0.0),
    (opt.Anderson, "widths", (100, 0)),
    (opt.Anderson, "widths", (10, 100)),
    (opt.TemperedSMC, "target_ess", 1.0),
    (opt.TemperedSMC, "n_runs", 1),
    (opt.Reweighting, "tempering", "auto"),
    (opt.Reweighting, "min_ess_count", -1.0),
    (opt.PriorImportance, "batch_size", 2.5),
    (opt.Quadrature, "n_quad", 2),
    (opt.Chains, "warmup", -1),
    (opt.Chains, "rhat_max", 0.9),
    (opt.Fallback, "first", opt.SecondCumulant()),
]


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_option_is_frozen_with_valid_defaults(cls):
    options = cls()
    if dataclasses.fields(options):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(options, dataclasses.fields(options)[0].name, None)


@pytest.mark.parametrize("cls, name, value", BAD, ids=lambda v: getattr(v, "__name__", str(v)))
def test_bad_values_fail_with_one_line_naming_the_field(cls, name, value):
    with pytest.raises(InputError) as err:
        cls(**{name: value})
    message = str(err.value)
    assert message.startswith(f"{cls.__name__}.{name}: ") and "\n" not in message


def test_rules_that_tie_fields_together():
    with pytest.raises(InputError, match="MonteCarlo.max_samples: must be >= n_samples = 8192"):
        opt.MonteCarlo(n_samples=8192, max_samples=4096)
    with pytest.raises(InputError, match="Chains.n_samples: need at least thin"):
        opt.Chains(n_samples=50, thin=10, n_batches=10)
    with pytest.raises(InputError, match="Reweighting.n_samples: must be at least n_batches"):
        opt.Reweighting(n_samples=8, n_batches=16)
    assert opt.ImportanceSampling(n_samples=262144).max_samples == 262144  # the default budget grows


def test_lists_become_tuples_and_defaults_match_the_documented_values():
    assert opt.Anderson(widths=[1000, 100]).widths == (1000, 100)
    assert opt.Reweighting().tempering == opt.TemperedSMC() and not opt.TemperedSMC().always
    assert opt.HMC(4, space="preactivation").n_leapfrog == 4  # positional fields keep their order


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_config_tables_round_trip(cls):
    options = cls()
    assert opt.build(cls, opt.as_dict(options), "methods.x") == options


def test_build_names_the_config_field_and_suggests_the_closest_one():
    with pytest.raises(
        InputError, match=r"methods\.solver\.max_step: unknown field of Anderson; did you mean 'max_steps'\?"
    ):
        opt.build(opt.Anderson, {"max_step": 3}, "methods.solver")
    with pytest.raises(InputError, match=r"^methods\.solver\.damping: must be a number > 0, got -1$"):
        opt.build(opt.Anderson, {"damping": -1}, "methods.solver")
    with pytest.raises(InputError, match=r"methods\.reweighting\.tempering\.n_particle: unknown field"):
        opt.build(opt.Reweighting, {"tempering": {"n_particle": 3}}, "methods.reweighting")
    built = opt.build(opt.Reweighting, {"tempering": False, "n_samples": 64}, "methods.reweighting")
    assert built == opt.Reweighting(n_samples=64, tempering=None)
    assert opt.as_dict(built)["tempering"] is False


def test_the_package_exports_every_option():
    for cls in ALL:
        if not cls.__name__.startswith("_"):
            assert getattr(ck, cls.__name__) is cls


@pytest.mark.parametrize(
    "make", [lambda: ck.Anderson(damping=math.inf), lambda: ck.MonteCarlo(rtol=math.nan)]
)
def test_numbers_must_be_finite(make):
    with pytest.raises(ck.InputError, match="must be a number"):
        make()
