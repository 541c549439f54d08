"""Experiment configuration: TOML files validated by pydantic, with `--set key=value` overrides."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import InputError


def _not_bool(value):
    """Numbers only: TOML `true` is not a width, a seed or a variance."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
LABELS = {"digits": range(10), "mnist": range(10)}  # the class labels each bundled data set has


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    """Which data set, how many points, which split."""

    task: Literal["xor", "digits", "mnist", "file"] = "digits"
    n_train: Int = Field(100, ge=2)
    n_test: Int = Field(100, ge=0)
    classes: tuple[Int, Int] = (0, 3)
    dim: Int = Field(10, ge=2, description="XOR input dimension")
    noise: Float = Field(0.2, ge=0, description="XOR cluster noise")
    path: str | None = Field(None, description="MNIST folder or .npz/.csv file")
    seed: Int = 0

    @model_validator(mode="after")
    def _classes_exist(self):
        labels = LABELS.get(self.task)
        if self.classes[0] == self.classes[1]:
            raise ValueError(f"classes: need two different labels (got {list(self.classes)})")
        if labels is not None and not set(self.classes) <= set(labels):
            raise ValueError(
                f"classes: {self.task} has the labels {labels[0]}..{labels[-1]} (got {list(self.classes)})"
            )
        return self


class NetworkConfig(_Strict):
    """Architecture and prior (NetworkSpec)."""

    depth: Int = Field(2, ge=1)
    width: Int = Field(100, ge=1)
    activation: Literal["erf", "relu", "linear", "tanh", "gelu"] = "erf"
    g_in: Float = Field(1.0, gt=0)
    g_w: Float | list[Float] = 1.5
    g_b: Float | list[Float] = 0.1
    g_w_over_g_c: Float | None = Field(
        None, gt=0, description="if set, g_w is this multiple of the critical g_c(activation, g_b)"
    )
    kappa: Float = Field(0.1, gt=0)


class MethodsConfig(_Strict):
    """Which kernels to compute, with their numerical settings."""

    perturbative: StrictBool = True
    map: StrictBool = True
    reweighted: StrictBool = Field(False, description="networks from the saddle point, reweighted (T17)")
    linear_exact: StrictBool = Field(False, description="exact posterior of a linear network (T18)")
    sampled: StrictBool = False
    n_samples: Int = Field(
        4096, ge=32, multiple_of=16, description="Monte Carlo samples per layer (V, tilted averages)"
    )
    rtol: Float = Field(
        0.02,
        ge=0,
        description="first order and MAP: more samples until SE(CKA adaptation) <= rtol x it (0: off)",
    )
    max_samples: Int = Field(131072, ge=32, description="the sample budget of rtol")
    reweighted_samples: Int = Field(
        4096, ge=32, multiple_of=16, description="networks drawn by the reweighted estimator"
    )
    tempering: Literal["auto", "always", "never"] = Field(
        "auto",
        description="reweighted: tempered SMC from the saddle point when plain reweighting's ESS is low "
        "(auto), always, or never",
    )
    smc_particles: Int = Field(128, ge=8, description="particles per tempered SMC run (8 runs)")
    map_method: Literal["auto", "linear", "importance", "cumulant"] = "auto"
    sampler: Literal["mala", "hmc", "nuts", "langevin"] = "mala"
    n_leapfrog: Int = Field(
        16, ge=1, description="HMC integration steps per trajectory (4 for preactivation)"
    )
    space: Literal["weights", "preactivation"] = Field(
        "weights",
        description="sample weights, or pre-activations with weights and readout integrated out (T19)",
    )
    chains: Int = Field(4, ge=1)
    warmup: Int = Field(1000, ge=0)
    samples: Int = Field(2000, ge=1)
    thin: Int = Field(10, ge=1)


class ExperimentConfig(_Strict):
    """One experiment: data, network, methods."""

    name: str = Field("experiment", description="names the default folder runs/NAME")
    seed: Int = 0
    data: DataConfig = DataConfig()
    network: NetworkConfig = NetworkConfig()
    methods: MethodsConfig = MethodsConfig()

    @model_validator(mode="after")
    def _linear_exact_is_linear(self):
        if self.methods.linear_exact and self.network.activation != "linear":
            raise ValueError(
                f"methods.linear_exact: needs network.activation = 'linear' "
                f"(got {self.network.activation!r}); use methods.reweighted or methods.sampled"
            )
        return self

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not _NAME.fullmatch(name) or name in (".", ".."):
            raise ValueError("use letters, digits and - _ . only (it names the folder runs/NAME)")
        return name


def _parse_value(text: str):
    """A --set value as TOML (numbers, booleans, lists, quoted strings), else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _first_error(err: ValidationError) -> str:
    item = err.errors()[0]
    loc = [str(p) for p in item["loc"] if not re.search(r"[\[\]-]", str(p))]  # drop union branch names
    field = ".".join(loc)
    message = item["msg"].removeprefix("Value error, ")
    if item["type"] == "literal_error":
        message = f"must be one of {item['ctx']['expected']}"
    named = re.match(r"([a-z_.]+): (.*)", message, re.S)
    if item["type"] == "value_error" and named:  # a model validator names its field itself
        return f"{'.'.join([*loc, named[1]])}: {named[2]}"
    return f"{field}: {message} (got {item.get('input')!r})"


def read_toml(source: str | Path | dict) -> dict:
    """The raw table of a TOML file (or a dict), sections copied so callers may edit them."""
    if isinstance(source, dict):
        raw = source
    else:
        path = Path(source)
        if not path.exists():
            raise InputError(f"config: {path} does not exist")
        if not path.is_file():
            raise InputError(f"config: {path} is a directory, not a TOML file")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise InputError(f"config: {path} is not a UTF-8 text file (expected TOML)") from None
        except OSError as err:
            raise InputError(f"config: cannot read {path} ({err.strerror})") from None
        except tomllib.TOMLDecodeError as err:
            raise InputError(f"config: {path} is not valid TOML ({err})") from None
    return {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}


def set_field(raw: dict, key: str, value) -> None:
    """Set the dotted field `section.key` of a raw config table."""
    *sections, leaf = key.strip().split(".")
    if not all([*sections, leaf]):
        raise InputError(f"--set: {key!r} is not a dotted field name such as network.width")
    target = raw
    for section in sections:
        target = target.setdefault(section, {})
        if not isinstance(target, dict):
            raise InputError(f"{key}: {section} is not a section")
    target[leaf] = value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` overrides (values parsed as TOML) to a raw config table."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--set: expected key=value, got {item!r}")
        set_field(raw, key, _parse_value(value.strip()))
    return raw


def validate(raw: dict, where: str = "") -> ExperimentConfig:
    """An ExperimentConfig from a raw table; InputError names the field and its allowed values."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise InputError(where + _first_error(err)) from None


def load_config(source: str | Path | dict, overrides: list[str] = ()) -> ExperimentConfig:
    """Validated config from a TOML file (or dict) with `section.key=value` overrides.

    Raises InputError with one line naming the field and its allowed values.
    """
    raw = apply_overrides(read_toml(source), overrides)
    if "sweep" in raw:
        raise InputError("config: has a [sweep] table; run it with `critical-kernels sweep`")
    return validate(raw)
