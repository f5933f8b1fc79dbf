"""Typed, validated run configuration (pydantic): unknown keys, wrong types, out-of-range values,
unknown rewards and methods, and broken cross-field constraints are rejected when the config is
resolved, with a one-line error naming the key, before any model loads.

A config file holds shared sections (model, train, optim, rewards) and per-method overlays under
`methods.<name>`, deep-merged over the shared part; `--set a.b=value` overrides are applied last.
The method section is validated by the method's own config class (`egrpo.methods` registry).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator

from .errors import ConfigError
from .methods import MethodConfig, method_spec, registry


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Strict):
    path: str = Field(description="diffusers Flux-format directory (FLUX.1-dev or a tiny one)")
    height: int = Field(720, ge=16)
    width: int = Field(720, ge=16)
    dtype: Literal["auto", "fp32", "bf16"] = "auto"
    device: str = Field("auto", description="auto: cuda:LOCAL_RANK when CUDA is available, else the CPU; "
                        "a bare `cuda` means this rank's GPU")
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
    adv_clip: float = Field(5.0, gt=0, description="the summed advantage is clamped to +-adv_clip")


class RewardsConfig(_Strict):
    names: list[str] = Field(min_length=1, description="registered reward names (egrpo.rewards)")
    weights: list[float] | None = None
    aggregation: Literal["normalise_each", "weight_then_normalise"] = "normalise_each"
    options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-reward options (weight paths)")
    batch: int = Field(32, ge=1, description="images per reward-model call")

    @field_validator("names")
    @classmethod
    def _registered(cls, names: list[str]) -> list[str]:
        from .rewards import REWARDS

        for n in names:
            if n not in REWARDS:
                raise ValueError(f"unknown reward {n!r} (registered: {', '.join(sorted(REWARDS))})")
        return names

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
    keep_checkpoint: bool = Field(True, description="keep the last checkpoint after the final export (lets "
                                  "train.iterations grow later); false deletes it (FLUX: ~143 GB a run)")
    micro_batch: int = Field(12, ge=1, description="distinct latents per training forward")
    sample_batch: int | None = Field(None, ge=1, description="max rows per sampling forward (None: no cap)")
    parallel: Literal["ddp", "fsdp"] = "ddp"
    probe: bool = Field(True, description="score one ODE sample per prompt of the current policy each "
                        "iteration (E-GRPO's anchor image; an extra T rows for the others): the training-"
                        "reward curve every method shares")


class Config(_Strict):
    name: str = Field("default", description="experiment name; part of every derived seed")
    seed: int = Field(0, ge=0)
    model: ModelConfig
    train: TrainConfig
    optim: OptimConfig = OptimConfig()
    rewards: RewardsConfig
    method: SerializeAsAny[MethodConfig]

    @field_validator("rewards")
    @classmethod
    def _weights_match(cls, v: RewardsConfig) -> RewardsConfig:
        v.weight_map()
        return v

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def digest(self) -> str:
        """Short hash of the resolved config (provenance and checkpoint identity, not seeding)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


# keys a resumed run may change: more iterations (never fewer) continue the same run
RESUMABLE = ("train.iterations",)


def changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b, key = old.get(k), new.get(k), f"{prefix}{k}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_keys(a, b, key + ".")
        elif a != b:
            out.append(key)
    return out


def resume_conflicts(old: dict, new: dict) -> list[str]:
    """Keys that forbid resuming a run of config `old` under config `new` (iterations may only grow)."""
    keys = [k for k in changed_keys(old, new) if k not in RESUMABLE]
    if new["train"]["iterations"] < old["train"]["iterations"] and "train.iterations" in changed_keys(old, new):
        keys.append("train.iterations (fewer than the checkpoint's run)")
    return keys


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
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key.strip()}: not a YAML value ({_yaml_problem(e)}): {raw!r}") from None
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key.strip()}: {p} is set to a value and a section at once")
        node[parts[-1]] = value
    return out


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(e, 'problem', None) or 'invalid YAML'}{where}"


def _error(e: ValidationError, prefix: str = "") -> ConfigError:
    err = e.errors()[0]
    loc = prefix + ".".join(str(p) for p in err["loc"])
    got = f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(err["input"], dict) else ""
    msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
    return ConfigError(f"config error: {loc.rstrip('.')}: {msg}{got}")


def resolve(raw: dict, method: str | None = None, seed: int | None = None, overrides: list[str] | None = None,
            base_dir: Path | None = None) -> Config:
    """Merge shared sections, the method overlay and overrides; validate; return a frozen Config.

    `method` may be omitted when the config names it (`method.name`, as a resolved config does)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config error: a run config is a mapping of sections, got {type(raw).__name__}")
    raw = dict(raw)
    method = method or (raw.get("method") or {}).get("name")
    if not method:
        raise ConfigError("config error: method: no method given (--method NAME, or method.name in the config)")
    method_spec(method)
    overlays = raw.pop("methods", {}) or {}
    if not isinstance(overlays, dict):
        raise ConfigError("config error: methods: must map method names to config overlays")
    unknown = set(overlays) - set(registry())
    if unknown:
        raise ConfigError(f"config error: methods.{sorted(unknown)[0]}: unknown method "
                          f"(registered: {', '.join(registry())})")
    merged = deep_merge(raw, overlays.get(method, {}) or {})
    merged = deep_merge(merged, {"method": {"name": method}})
    if seed is not None:
        merged["seed"] = seed
    merged = deep_merge(merged, parse_overrides(overrides or []))
    for section in ("model", "train", "optim", "rewards", "method"):
        if section in merged and not isinstance(merged[section], dict):
            raise ConfigError(f"config error: {section}: must be a section of keys, got {merged[section]!r}")
    if base_dir is not None:  # relative paths in a config file are relative to the file
        for section, key in (("model", "path"), ("train", "prompts")):
            val = merged.get(section, {}).get(key)
            if isinstance(val, str) and not Path(val).is_absolute() and (base_dir / val).exists():
                merged[section][key] = str(base_dir / val)
    try:
        m = method_spec(method).config.model_validate(merged["method"])
    except ValidationError as e:
        raise _error(e, "method.") from None
    try:
        return Config.model_validate({**merged, "method": m})
    except ValidationError as e:
        raise _error(e) from None


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """A YAML file's content; a one-line ConfigError naming the file for a missing, unreadable or
    malformed one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path}: YAML syntax error ({_yaml_problem(e)})") from None


def load_config(path: str | Path, method: str | None = None, seed: int | None = None,
                overrides: list[str] | None = None, section: str | None = None) -> Config:
    """Load a run config from a YAML/JSON file (or from its top-level key `section`, e.g. the Snakemake
    config's `training` block)."""
    path = Path(path)
    raw = read_yaml(path) or {}
    if section is not None:
        if not isinstance(raw, dict) or section not in raw:
            raise ConfigError(f"{section}: section missing from {path}")
        raw = raw[section]
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: a run config is a mapping of sections, got {type(raw).__name__}")
    return resolve(raw, method, seed, overrides, base_dir=path.parent)
