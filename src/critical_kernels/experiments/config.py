"""Experiment configuration: TOML files validated by pydantic, with `--set key=value` overrides."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import InputError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    """Which data set, how many points, which split."""

    task: Literal["xor", "digits", "mnist", "file"] = "digits"
    n_train: int = Field(100, ge=2)
    n_test: int = Field(100, ge=0)
    classes: tuple[int, int] = (0, 3)
    dim: int = Field(10, ge=2, description="XOR input dimension")
    noise: float = Field(0.2, ge=0, description="XOR cluster noise")
    path: str | None = Field(None, description="MNIST folder or .npz/.csv file")
    seed: int = 0


class NetworkConfig(_Strict):
    """Architecture and prior (NetworkSpec)."""

    depth: int = Field(2, ge=1)
    width: int = Field(100, ge=1)
    activation: Literal["erf", "relu", "linear", "tanh", "gelu"] = "erf"
    g_in: float = Field(1.0, gt=0)
    g_w: float | list[float] = 1.5
    g_b: float | list[float] = 0.1
    g_w_over_g_c: float | None = Field(
        None, gt=0, description="if set, g_w is this multiple of the critical g_c(activation, g_b)"
    )
    kappa: float = Field(0.1, gt=0)


class MethodsConfig(_Strict):
    """Which kernels to compute, with their numerical settings."""

    perturbative: bool = True
    map: bool = True
    sampled: bool = False
    n_samples: int = Field(
        4096, ge=32, multiple_of=16, description="Monte Carlo samples per layer (V, tilted averages)"
    )
    map_method: Literal["auto", "linear", "importance", "cumulant"] = "auto"
    sampler: Literal["mala", "hmc", "nuts", "langevin"] = "mala"
    chains: int = Field(4, ge=1)
    warmup: int = Field(1000, ge=0)
    samples: int = Field(2000, ge=1)
    thin: int = Field(10, ge=1)


class ExperimentConfig(_Strict):
    """One experiment: data, network, methods."""

    name: str = "experiment"
    seed: int = 0
    data: DataConfig = DataConfig()
    network: NetworkConfig = NetworkConfig()
    methods: MethodsConfig = MethodsConfig()


def _parse_value(text: str):
    """A --set value as TOML (numbers, booleans, lists, quoted strings), else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _first_error(err: ValidationError) -> str:
    item = err.errors()[0]
    field = ".".join(str(p) for p in item["loc"])
    message = item["msg"]
    if item["type"] == "literal_error":
        message = f"must be one of {item['ctx']['expected']}"
    return f"{field}: {message} (got {item.get('input')!r})"


def read_toml(source: str | Path | dict) -> dict:
    """The raw table of a TOML file (or a dict), sections copied so callers may edit them."""
    if isinstance(source, dict):
        raw = source
    else:
        path = Path(source)
        if not path.exists():
            raise InputError(f"config: {path} does not exist")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise InputError(f"config: {path} is not valid TOML ({err})") from None
    return {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}


def set_field(raw: dict, key: str, value) -> None:
    """Set the dotted field `section.key` of a raw config table."""
    *sections, leaf = key.strip().split(".")
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
