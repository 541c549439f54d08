"""Experiment configuration: TOML files validated by pydantic, with `--set key=value` overrides."""

from __future__ import annotations

import copy
import difflib
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import core_schema

from ..errors import InputError
from ..estimators.options import (
    HMC,
    MALA,
    NUTS,
    Anderson,
    Chains,
    ExactGaussian,
    Fallback,
    ImportanceSampling,
    Langevin,
    MonteCarlo,
    Quadrature,
    Reweighting,
    SecondCumulant,
    as_dict,
    build,
)
from ..estimators.registry import REGISTRY

# strict: a config's `width = "50"` or `kappa = true` is an error, as it is from Python (a float
# field takes an integer; nothing takes a string or a bool for a number)
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
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
    targets: Literal["pm1", "01"] = Field("pm1", description="digits, mnist: +1/-1 or 0/1 targets")
    standardise: Literal["global", "pixelwise"] = Field(
        "global", description="digits, mnist: centre and one global scale, or each pixel by its std"
    )

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


# ----------------------------------------------------------------------------- [methods] tables


# the flat [methods] keys of configs before 0.7 and the tables that replaced them (named in the error)
MOVED = {
    "n_samples": "methods.monte_carlo.n_samples, methods.importance.n_samples and methods.cumulant.n_samples",
    "rtol": "methods.monte_carlo.rtol, methods.importance.rtol and methods.cumulant.rtol",
    "max_samples": "methods.monte_carlo.max_samples, methods.importance.max_samples and "
    "methods.cumulant.max_samples",
    "reweighted_samples": "methods.reweighting.n_samples",
    "tempering": "methods.reweighting.tempering (false: never; {always = true}: always)",
    "smc_particles": "methods.reweighting.tempering.n_particles",
    "n_leapfrog": "methods.hmc.n_leapfrog",
    "space": "methods.SAMPLER.space",
    "warmup": "methods.chains.warmup",
    "samples": "methods.chains.n_samples",
    "thin": "methods.chains.thin",
}

# weight-space HMC: converges on every example config and bank case (MALA did not on tiny.toml)
DEFAULT_SAMPLER = "hmc"


# `critical-kernels run` keeps the sampled chains' checkpoint in its folder (`run --resume`)
_RUN_ONLY = (
    ("checkpoint", "`critical-kernels run` checkpoints the chains in its folder; --resume continues"),
)


@dataclass(frozen=True)
class _Table:
    """Annotated metadata that makes [methods.NAME] an options object of `cls`, built by
    `options.build` from its table (config `defaults` for the fields it leaves out) and dumped back as
    that table. `off`: fields where 0 stands for None (TOML has no null), e.g. rtol = 0 (no tolerance);
    `not_in_configs`: fields the command line sets (field -> why)."""

    cls: type
    name: str
    defaults: tuple[tuple[str, object], ...] = ()
    off: tuple[str, ...] = ()
    not_in_configs: tuple[tuple[str, str], ...] = ()

    def parse(self, value):
        if isinstance(value, dict):
            for key, why in self.not_in_configs:
                if key in value:
                    raise InputError(f"methods.{self.name}.{key}: not a config setting ({why})")
            value = {**dict(self.defaults), **value}
            value.update({k: None for k in self.off if value.get(k) == 0 and not isinstance(value[k], bool)})
        return build(
            self.cls, value, f"methods.{self.name}"
        )  # InputError is a ValueError: pydantic reports it

    def dump(self, options) -> dict:
        return {**as_dict(options), **{k: 0 for k in self.off if getattr(options, k) is None}}

    def __get_pydantic_core_schema__(self, source, handler):
        serializer = core_schema.plain_serializer_function_ser_schema(self.dump)
        return core_schema.no_info_plain_validator_function(self.parse, serialization=serializer)


def _switches(raw):
    """The flat `NAME = true/false` keys of the registered estimators (estimators.registry), collected
    into `run` with the registry's defaults for the ones left out."""
    if not isinstance(raw, dict):
        return raw
    raw = dict(raw)
    given = {name: raw.pop(name) for name in list(raw) if name in REGISTRY}
    raw["run"] = {**{name: e.default for name, e in REGISTRY.items()}, **raw.get("run", {}), **given}
    return raw


class MethodsConfig(_Strict):
    """Which kernels to compute (`NAME = true` for every registered estimator, e.g. perturbative, map,
    reweighted, linear_exact, sampled), and the options object of every method: the table
    [methods.NAME] holds the fields of its options class and is validated by that class alone."""

    run: dict[str, StrictBool] = Field(default_factory=lambda: _switches({})["run"])
    map_method: Literal["auto", "linear", "importance", "cumulant"] = "auto"
    sampler: Literal["mala", "hmc", "nuts", "langevin"] = DEFAULT_SAMPLER
    monte_carlo: Annotated[MonteCarlo, _Table(MonteCarlo, "monte_carlo", off=("rtol",))] = MonteCarlo()
    importance: Annotated[ImportanceSampling, _Table(ImportanceSampling, "importance", off=("rtol",))] = (
        ImportanceSampling()
    )
    cumulant: Annotated[SecondCumulant, _Table(SecondCumulant, "cumulant", off=("rtol",))] = SecondCumulant()
    solver: Annotated[Anderson, _Table(Anderson, "solver")] = Anderson()
    quadrature: Annotated[Quadrature, _Table(Quadrature, "quadrature")] = Quadrature()
    # config defaults that differ from the class defaults: 4096 networks, 2000 steps per chain
    reweighting: Annotated[Reweighting, _Table(Reweighting, "reweighting", (("n_samples", 4096),))] = (
        Reweighting(n_samples=4096)
    )
    chains: Annotated[Chains, _Table(Chains, "chains", (("n_samples", 2000),), not_in_configs=_RUN_ONLY)] = (
        Chains(n_samples=2000)
    )
    mala: Annotated[MALA, _Table(MALA, "mala")] = MALA()
    hmc: Annotated[HMC, _Table(HMC, "hmc")] = HMC()
    nuts: Annotated[NUTS, _Table(NUTS, "nuts")] = NUTS()
    langevin: Annotated[Langevin, _Table(Langevin, "langevin")] = Langevin()

    _run = model_validator(mode="before")(_switches)

    @model_validator(mode="after")
    def _known(self):
        unknown = [name for name in self.run if name not in REGISTRY]
        if unknown:
            raise ValueError(f"run: no registered estimator {unknown[0]!r} (known: {', '.join(REGISTRY)})")
        return self

    @model_serializer(mode="wrap")
    def _flat(self, handler) -> dict:
        """The switches back as flat keys (`map = true`), as a config file spells them."""
        table = handler(self)
        return {**table.pop("run"), **table}

    def runs(self, name: str) -> bool:
        """Whether the estimator `name` is computed."""
        return bool(self.run.get(name, False))

    @property
    def sampler_options(self):
        """The options object of the chosen sampler (its [methods.NAME] table)."""
        return getattr(self, self.sampler)

    def tilted(self, spec):
        """The MAP's tilted-average options of `map_method`: "auto" is exact for linear phi, else
        importance sampling ([methods.importance]) with the second-cumulant fallback ([methods.cumulant])."""
        if self.map_method == "linear" or (self.map_method == "auto" and spec.act.is_linear):
            return ExactGaussian()
        chosen = {"importance": self.importance, "cumulant": self.cumulant}
        return chosen.get(self.map_method, Fallback(self.importance, self.cumulant))


class ExperimentConfig(_Strict):
    """One experiment: data, network, methods."""

    name: str = Field("experiment", description="names the default folder runs/NAME")
    seed: Int = 0
    data: DataConfig = DataConfig.model_validate({})
    network: NetworkConfig = NetworkConfig.model_validate({})
    methods: MethodsConfig = MethodsConfig()

    @model_validator(mode="after")
    def _handles_activation(self):
        act = self.network.activation
        for name, estimator in REGISTRY.items():
            if self.methods.runs(name) and estimator.activations and act not in estimator.activations:
                wanted = " or ".join(repr(a) for a in estimator.activations)
                others = [n for n, e in REGISTRY.items() if e.activations is None and e.name != name]
                raise ValueError(
                    f"methods.{name}: needs network.activation = {wanted} (got {act!r})"
                    + (f"; use methods.{' or methods.'.join(others[-2:])}" if others else "")
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
    if loc[:2] == ["methods", "run"]:  # the switches are flat keys in a config: methods.NAME
        del loc[1]
    field = ".".join(loc)
    message = item["msg"].removeprefix("Value error, ")
    message = {"int_type": "must be an integer", "float_type": "must be a number"}.get(item["type"], message)
    if item["type"] == "literal_error":
        message = f"must be one of {item.get('ctx', {}).get('expected')}"
    if item["type"] == "extra_forbidden":
        if loc[:1] == ["methods"] and len(loc) == 2 and loc[1] in MOVED:
            return f"{field}: a flat key of configs before 0.7; set {MOVED[loc[1]]} instead"
        section = ".".join(loc[:-1]) or "the config"
        return f"{field}: not a field of {section}{_did_you_mean(loc)}"
    named = re.match(r"([a-z_.]+): (.*)", message, re.S)
    if item["type"] == "value_error" and named:  # a validator names its field itself (options.build: in full)
        path = named[1] if f"{named[1]}.".startswith(f"{field}.") else ".".join([*loc, named[1]])
        return f"{path}: {named[2]}"
    return f"{field}: {message} (got {item.get('input')!r})"


def _did_you_mean(loc: list[str]) -> str:
    """ "; did you mean 'width'?" for an unknown key at `loc` (a section or a field of one)."""
    model = ExperimentConfig
    for part in loc[:-1]:
        field = model.model_fields.get(part)
        model = field.annotation if field is not None else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return ""
    extra = list(REGISTRY) if model is MethodsConfig else []
    names = [n for n in model.model_fields if n != "run"] + extra
    close = difflib.get_close_matches(loc[-1], names, n=1)
    return f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(names)})"


def read_toml(source: str | Path | dict) -> dict:
    """The raw table of a TOML file (or a dict), copied so callers may edit it."""
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
    return copy.deepcopy(raw)  # callers may edit every table, nested ones too


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


def apply_overrides(raw: dict, overrides: Sequence[str]) -> dict:
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


def load_config(source: str | Path | dict, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Validated config from a TOML file (or dict) with `section.key=value` overrides.

    Raises InputError with one line naming the field and its allowed values.
    """
    raw = apply_overrides(read_toml(source), overrides)
    if "sweep" in raw:
        raise InputError("config: has a [sweep] table; run it with `critical-kernels sweep`")
    return validate(raw)
