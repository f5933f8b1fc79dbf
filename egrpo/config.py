"""Typed, validated run configuration (pydantic): unknown keys, wrong types and out-of-range values
are rejected at load time with a one-line error naming the key.

A config file holds shared sections (model, train, optim, rewards) and per-method overlays under
`methods.<name>`, deep-merged over the shared part; `--set a.b=value` overrides are applied last.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Strict):
    path: str = Field(description="diffusers Flux-format directory (FLUX.1-dev or a tiny one)")
    height: int = Field(720, ge=16)
    width: int = Field(720, ge=16)
    dtype: Literal["auto", "fp32", "bf16"] = "auto"
    device: str = "auto"
    guidance: float = Field(3.5, ge=0)
    max_sequence_length: int = Field(512, ge=1)
    lora_rank: int = Field(0, ge=0, description="0 = full fine-tuning")
    lora_alpha: float | None = Field(None, gt=0)
    gradient_checkpointing: bool = False
    decode_batch: int | None = Field(16, ge=1, description="images per VAE decode call (None: all at once)")
    cudnn_attention: bool = Field(True, description="let PyTorch's SDPA use cuDNN's attention kernel on CUDA "
                                  "(PyTorch's default; its backward faulted on an H100, benchmarks/README.md)")


class OptimConfig(_Strict):
    lr: float = Field(1e-5, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    grad_clip: float = Field(1.0, gt=0)
    clip_range: float = Field(1e-4, gt=0, description="PPO clip epsilon (1e-4 in all reference code)")
    adv_clip: float = Field(5.0, gt=0)


class RewardsConfig(_Strict):
    names: list[str] = Field(default_factory=lambda: ["hps"], min_length=1)
    weights: list[float] | None = None
    aggregation: Literal["normalise_each", "weight_then_normalise"] = "normalise_each"
    options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-reward options (weight paths)")

    def weight_map(self) -> dict[str, float]:
        weights = self.weights or [1.0] * len(self.names)
        if len(weights) != len(self.names):
            raise ValueError(f"rewards.weights has {len(weights)} entries for {len(self.names)} rewards")
        return dict(zip(self.names, weights))


class TrainConfig(_Strict):
    iterations: int = Field(300, ge=1)
    prompts_per_iteration: int = Field(8, ge=1, description="global: split over ranks, groups kept whole")
    prompts: str | list[str] = Field(description="text file (one prompt a line) or an inline list")
    checkpoint_every: int = Field(25, ge=1)
    micro_batch: int = Field(12, ge=1, description="distinct latents per training forward")
    sample_batch: int | None = Field(None, ge=1, description="max rows per sampling forward (None: no cap)")
    parallel: Literal["ddp", "fsdp"] = "ddp"


class _Method(_Strict):
    """Fields every method has: schedule (T steps, time shift), group size G, SDE noise level."""

    num_steps: int = Field(16, ge=2)
    shift: float = Field(3.0, gt=0)
    group_size: int = Field(12, ge=2)
    eta: float = Field(0.7, gt=0)


class EGRPOMethod(_Method):
    name: Literal["egrpo"] = "egrpo"
    active: Union[Literal["first4", "first8", "second8", "all"], list[int]] = "first8"
    tau: float = Field(2.2, ge=0)
    reading: Literal["entropy_power", "entropy_power_squared"] = "entropy_power"
    fixed_merge: int | None = Field(None, ge=1)
    granularities: list[int] = Field(default_factory=lambda: [1, 2], min_length=1)


class DanceGRPOMethod(_Method):
    name: Literal["dancegrpo"] = "dancegrpo"
    eta: float = Field(0.3, gt=0)  # constant noise level
    train_fraction: float = Field(0.6, gt=0, le=1)
    drop_last: bool = True
    shared_initial_noise: bool = True


class MixGRPOMethod(_Method):
    name: Literal["mixgrpo", "mixgrpo_flash"] = "mixgrpo"
    num_steps: int = Field(25, ge=2)
    window_size: int = Field(4, ge=1)
    shift_every: int | None = Field(None, ge=1, description="default 25 (20 for Flash)")
    max_start: int | None = Field(None, ge=0, description="default T - 2")
    shared_initial_noise: bool = True
    flash_fraction: float = Field(0.4, gt=0, le=1)


class FlowGRPOMethod(_Method):
    name: Literal["flowgrpo"] = "flowgrpo"


Method = Annotated[Union[EGRPOMethod, DanceGRPOMethod, MixGRPOMethod, FlowGRPOMethod], Field(discriminator="name")]
METHODS = ("egrpo", "dancegrpo", "mixgrpo", "mixgrpo_flash", "flowgrpo")


class Config(_Strict):
    name: str = Field("default", description="experiment name; part of every derived seed")
    seed: int = Field(0, ge=0)
    model: ModelConfig
    train: TrainConfig
    optim: OptimConfig = OptimConfig()
    rewards: RewardsConfig = RewardsConfig()
    method: Method

    @field_validator("rewards")
    @classmethod
    def _weights_match(cls, v: RewardsConfig) -> RewardsConfig:
        v.weight_map()
        return v

    def digest(self) -> str:
        """Short hash of the resolved config (provenance, not seeding)."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:12]


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(pairs: list[str]) -> dict:
    """['a.b=1', 'c=[1,2]'] -> {'a': {'b': 1}, 'c': [1, 2]} (values parsed as YAML)."""
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def resolve(raw: dict, method: str, seed: int | None = None, overrides: list[str] | None = None,
            base_dir: Path | None = None) -> Config:
    """Merge shared sections, the method overlay and overrides; validate; return a frozen Config."""
    if method not in METHODS:
        raise ConfigError(f"method: must be one of {', '.join(METHODS)}, got {method!r}")
    raw = dict(raw)
    overlays = raw.pop("methods", {}) or {}
    unknown = set(overlays) - set(METHODS)
    if unknown:
        raise ConfigError(f"methods.{sorted(unknown)[0]}: unknown method (known: {', '.join(METHODS)})")
    merged = deep_merge(raw, overlays.get(method, {}) or {})
    merged = deep_merge(merged, {"method": {"name": method}})
    if seed is not None:
        merged["seed"] = seed
    merged = deep_merge(merged, parse_overrides(overrides or []))
    if base_dir is not None:  # relative paths in a config file are relative to the file
        for section, key in (("model", "path"), ("train", "prompts")):
            val = merged.get(section, {}).get(key)
            if isinstance(val, str) and not Path(val).is_absolute() and (base_dir / val).exists():
                merged[section][key] = str(base_dir / val)
    try:
        return Config.model_validate(merged)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"] if p not in ("egrpo", "dancegrpo", "mixgrpo", "mixgrpo_flash", "flowgrpo"))
        got = f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(err["input"], dict) else ""
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(f"config error: {loc}: {msg}{got}") from None


def load_config(path: str | Path, method: str, seed: int | None = None, overrides: list[str] | None = None,
                section: str | None = None) -> Config:
    """Load a run config from a YAML file (or from its top-level key `section`, e.g. the Snakemake
    config's `training` block)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if section is not None:
        if section not in raw:
            raise ConfigError(f"{section}: section missing from {path}")
        raw = raw[section]
    return resolve(raw, method, seed, overrides, base_dir=path.parent)
