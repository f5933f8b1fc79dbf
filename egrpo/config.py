"""Typed, validated run configuration (pydantic): unknown keys, wrong types, out-of-range values,
unknown rewards and methods, and broken cross-field constraints are rejected when the config is
resolved, with a one-line error naming the key, before any model loads.

A config file holds shared sections (model, train, optim, rewards) and per-method overlays under
`methods.<name>`, deep-merged over the shared part; `--set a.b=value` overrides are applied last.
The method section is validated by the method's own config class (`egrpo.methods` registry).

The path rule, for every config and spec (a run config, the Snakemake config, an evaluation protocol,
a `--set` override): a relative path is relative to the working directory of the command that reads
it (a Snakemake job's is Snakemake's --directory), never to the file that holds it; nothing is guessed.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .methods import MethodConfig, method_spec, registry
from .rewards import RewardName, check_options
from .strict import FLOAT32_MAX, Strict, key_error

MAX_SEQUENCE_LENGTH = 512  # T5 tokens of a FLUX.1-dev prompt (diffusers' FluxPipeline default)
GUIDANCE = 3.5  # FLUX.1-dev's guidance embedding (no CFG), in training and in the paper's evaluation


class ModelConfig(Strict):
    """The backbone: where it is, the resolution it trains at, its precision and memory settings."""

    path: str = Field(description="diffusers Flux-format directory (FLUX.1-dev or a tiny one)")
    height: int = Field(720, ge=16)
    width: int = Field(720, ge=16)
    dtype: Literal["auto", "fp32", "bf16"] = "auto"
    device: str = Field("auto", description="auto: cuda:LOCAL_RANK when CUDA is available, else the CPU; "
                        "a bare `cuda` means this rank's GPU")
    guidance: float = Field(GUIDANCE, ge=0, description="guidance embedding of the distilled model")
    max_sequence_length: int = Field(MAX_SEQUENCE_LENGTH, ge=1, description="T5 tokens of a prompt")
    lora_rank: int = Field(0, ge=0, description="0 = full fine-tuning")
    lora_alpha: float | None = Field(None, gt=0)
    gradient_checkpointing: bool = False
    decode_batch: int | None = Field(16, ge=1, description="images per VAE decode call (None: all at once)")
    cudnn_attention: bool = Field(True, description="let PyTorch's SDPA use cuDNN's attention kernel on CUDA "
                                  "(PyTorch's default; its backward faulted on an H100, benchmarks/README.md)")


class OptimConfig(Strict):
    """AdamW, gradient clipping and the clipped policy-gradient objective."""

    lr: float = Field(1e-5, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    grad_clip: float = Field(1.0, gt=0)
    clip_range: float = Field(1e-4, gt=0, description="PPO clip epsilon (1e-4 in all reference code)")
    adv_clip: float = Field(5.0, gt=0, description="the summed advantage is clamped to +-adv_clip")

    @model_validator(mode="after")
    def _float32_steps(self):
        """AdamW computes in float32: its first step moves a weight by up to lr / (1 - beta1) (bias
        correction) and decays it by lr * weight_decay; either past float32's range is an overflow
        in the first step, after the model has loaded."""
        step = self.lr / (1 - self.betas[0])
        if step > FLOAT32_MAX:
            raise key_error(("lr",), f"overflows float32 in AdamW's first step (lr / (1 - betas[0]) = {step:.3g} > "
                            f"{FLOAT32_MAX:.3g})", self.lr)
        if self.lr * self.weight_decay > FLOAT32_MAX:
            raise key_error(("weight_decay",), f"lr * weight_decay = {self.lr * self.weight_decay:.3g} overflows "
                            "float32", self.weight_decay)
        return self


class RewardChoice(Strict):
    """Which rewards a run trains on and how they combine (a run config's `rewards`, and a reward
    setting of the Snakemake config)."""

    names: list[RewardName] = Field(min_length=1, description="registered rewards trained on (egrpo.rewards)")
    weights: list[float] | None = Field(None, description="one weight per reward (default: 1 each)")
    aggregation: Literal["normalise_each", "weight_then_normalise"] = Field(
        "normalise_each", description="normalise each reward's advantages then sum with the weights, or "
        "weight the rewards then normalise the sum")

    @model_validator(mode="after")
    def _weights_match(self):
        if self.weights is not None and len(self.weights) != len(self.names):
            raise ValueError(f"weights has {len(self.weights)} entries for {len(self.names)} rewards")
        return self

    def weight_map(self) -> dict[str, float]:
        return dict(zip(self.names, self.weights or [1.0] * len(self.names)))


RewardPrecision = Literal["fp32", "amp", "bf16"]  # egrpo.rewards.images.PRECISIONS


class RewardsConfig(RewardChoice):
    """The rewards a run trains on, their options, precision and batch."""

    options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-reward options (weight paths)")
    normalise_weights: bool = Field(False, description="divide the weights by their sum (MixGRPO's release: "
                                    "1:1 becomes 0.5:0.5)")
    precision: RewardPrecision | dict[RewardName, RewardPrecision] = Field(
        "amp", description="the reward models' precision (or one per reward): amp = fp32 weights under fp16 "
        "autocast on a GPU (the releases' training rewards; fp32 on a CPU), fp32, or bf16 (half the memory)")
    batch: int = Field(32, ge=1, description="images per reward-model call")

    @field_validator("options")
    @classmethod
    def _precision_once(cls, options: dict) -> dict:
        for name, o in options.items():
            if "precision" in (o or {}):
                raise ValueError(f"{name}.precision: set by rewards.precision (a run's rewards) or eval.precision "
                                 "(the metrics), not per reward's options")
        return options

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_names(cls, precision):
        from .rewards import REWARDS

        for n in precision if isinstance(precision, dict) else ():  # before the union: name the reward
            if n not in REWARDS:
                raise ValueError(f"unknown reward {n!r} (registered: {', '.join(sorted(REWARDS))})")
        return precision

    def reward_options(self, name: str) -> dict:
        """What reward `name` is built with: its options and its precision."""
        p = self.precision
        default = type(self).model_fields["precision"].default
        return {**(self.options.get(name) or {}), "precision": p.get(name, default) if isinstance(p, dict) else p}

    def weight_map(self) -> dict[str, float]:
        weights = super().weight_map()
        if self.normalise_weights:
            total = sum(weights.values())
            if not total > 0:
                raise ValueError(f"rewards.normalise_weights: the weights {list(weights.values())} do not sum to a "
                                 "positive number")
            weights = {n: w / total for n, w in weights.items()}
        return weights

    @model_validator(mode="after")
    def _normalisable(self):
        self.weight_map()
        return self

    @model_validator(mode="after")
    def _options(self):
        """Options only of the rewards trained on, every one's checked against its reward's options model
        (keys and types; the weight paths a run needs are checked when it starts, before any model loads)."""
        for name, options in self.options.items():
            if name not in self.names:
                raise key_error(("options", name), f"not one of the rewards trained on ({', '.join(self.names)})",
                                options, "missing")
        for name in self.names:
            check_options(name, self.options.get(name, {}), ("options", name), required=False)
        return self


class TrainConfig(Strict):
    """The training loop: iterations, batches, checkpoints, data parallelism."""

    iterations: int = Field(300, ge=1)
    prompts_per_iteration: int = Field(8, ge=1, description="global: split over ranks, groups kept whole")
    prompts: str | list[str] = Field(description="text file (one prompt a line) or an inline list")
    checkpoint_every: int = Field(25, ge=1)
    keep_checkpoint: bool = Field(True, description="keep the last checkpoint after the final export (lets "
                                  "train.iterations grow later); false deletes it (FLUX: ~143 GB a run)")
    export_dtype: Literal["fp32", "bf16"] = Field(
        "fp32", description="dtype of the exported trained weights: fp32, the master weights as the releases save "
        "them (FLUX: 48 GB a run); bf16 halves that and rounds away updates below half a bf16 step of a weight")
    micro_batch: int = Field(12, ge=1, description="distinct latents per training forward (a step's transitions packed together: the timestep is per row)")
    sample_batch: int | None = Field(None, ge=1, description="max rows per sampling forward (None: no cap)")
    parallel: Literal["ddp", "fsdp"] = "ddp"
    probe: bool = Field(True, description="score one ODE sample per prompt of the current policy each "
                        "iteration (E-GRPO's anchor image; an extra T rows for the others): the training-"
                        "reward curve every method shares")


class DeterminismConfig(Strict):
    """Which kernels the job may run (egrpo.determinism): machine-independent CPU numbers, a fixed
    thread count, deterministic GPU kernels."""

    cpu: Literal["native", "portable"] = Field("native", description="portable: ATen AVX2 kernels, MKL's "
                                               "vendor-neutral GEMM, no oneDNN, fixed threads: the same numbers "
                                               "on every x86-64 CPU with AVX2; native: each library picks by the CPU")
    threads: int | None = Field(None, ge=1, description="intra-op CPU threads (results change with the count); "
                                "null: 1 when portable, else torch's default")
    gpu: bool = Field(False, description="deterministic CUDA kernels (torch.use_deterministic_algorithms, cuBLAS "
                      "workspace, cuDNN without autotuning and cuDNN attention): a rerun on the same GPUs repeats")


def determinism_setting(raw, key: str = "determinism") -> DeterminismConfig:
    """A `determinism` section (a mapping, or None for the defaults), validated; a ConfigError names the key."""
    try:
        return DeterminismConfig.model_validate(raw or {})
    except ValidationError as e:
        raise config_error(e, f"{key}.") from None


class Config(Strict):
    """A resolved run config: everything one `egrpo train` run uses."""

    name: str = Field("default", description="experiment name; part of every derived seed")
    seed: int = Field(0, ge=0)
    model: ModelConfig
    train: TrainConfig
    optim: OptimConfig = OptimConfig()
    rewards: RewardsConfig
    method: SerializeAsAny[MethodConfig]
    determinism: DeterminismConfig = Field(
        default_factory=DeterminismConfig, description="which kernels the run may use (egrpo/determinism.py); a "
        "Snakemake config sets it once at its top level (`determinism:`), for every job")

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def digest(self) -> str:
        """Short hash of the resolved config (provenance and checkpoint identity, not seeding)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def section_schema(model: type[BaseModel], exclude: tuple[str, ...] = (), partial: bool = False) -> dict:
    """JSON schema of a spec model, nested models inlined, without pydantic's titles and with one-line
    descriptions; `partial`: an overlay, where no key is required and none has a default (it sets
    only what it names)."""
    schema = _strip(model.model_json_schema(), ("title",))
    defs = schema.pop("$defs", {})
    schema = _inline(schema, defs)
    for key in exclude:
        schema["properties"].pop(key, None)
    schema["required"] = [k for k in schema.get("required", []) if k in schema["properties"]]
    if partial:
        schema.pop("required")
        schema["properties"] = {k: _strip(v, ("default",)) for k, v in schema["properties"].items()}
    elif not schema["required"]:
        schema.pop("required")
    schema["additionalProperties"] = False
    return schema


def _strip(node, keys: tuple[str, ...]):
    """Drop `keys` (a schema's annotations, not property names) throughout; one-line descriptions."""
    if isinstance(node, dict):
        return {k: " ".join(v.split()) if k == "description" and isinstance(v, str) else _strip(v, keys)
                for k, v in node.items() if k not in keys or isinstance(v, dict) and "type" in v}
    if isinstance(node, list):
        return [_strip(v, keys) for v in node]
    return node


def _inline(node, defs: dict):
    """Replace each {"$ref": "#/$defs/X"} by X itself (the config schemas have no recursive types)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target = _inline(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
            return {**target, **{k: _inline(v, defs) for k, v in node.items() if k != "$ref"}}
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def overlay_schema(exclude: dict[str, tuple[str, ...]]) -> tuple[dict, dict]:
    """JSON schema of a run config as an overlay (every key optional), without the keys `exclude`
    names per section, with per-method overlays under `methods.<name>` (each method's keys its own);
    and the definitions it refers to ($defs: each section once)."""
    defs: dict = {}

    def ref(model: type[BaseModel], section: str, skip: tuple[str, ...]) -> dict:
        name = f"{model.__name__}Overlay"
        if name not in defs:
            defs[name] = section_schema(model, exclude.get(section, ()) + skip, partial=True)
            defs[name]["description"] = " ".join((model.__doc__ or f"the keys of {model.__name__}").split())
        return {"$ref": f"#/$defs/{name}"}

    def sections(method_config: type[MethodConfig]) -> dict:
        props = {}
        for name, field in Config.model_fields.items():
            model = method_config if name == "method" else field.annotation
            if isinstance(model, type) and issubclass(model, BaseModel):
                props[name] = ref(model, name, ("name",) if name == "method" else ())
            else:
                props[name] = _strip(Config.model_json_schema()["properties"][name], ("title", "default"))
        return props

    shared = sections(MethodConfig)
    per_method = {name: {"type": "object", "additionalProperties": False, "properties": sections(registry()[name].config)}
                  for name in sorted(registry())}
    schema = {"type": "object", "additionalProperties": False,
              "properties": {**shared, "methods": {"type": "object", "additionalProperties": False,
                                                   "description": "per-method overlays, merged over the shared sections",
                                                   "properties": per_method}}}
    return schema, defs


# keys a resumed run may change: more iterations (never fewer) continue the same run; the export's dtype
# changes no trained weight
RESUMABLE = ("train.iterations", "train.export_dtype")


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


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2's core booleans only (true/false): YAML 1.1's yes/no/on/off stay strings, so
    `--set train.iterations=yes` is an error, never 1."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))


def parse_overrides(pairs: list[str]) -> dict:
    """['a.b=1', 'c=[1,2]'] -> {'a': {'b': 1}, 'c': [1, 2]} (values parsed as YAML 1.2)."""
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        try:
            value = yaml.load(raw, Loader=_Yaml12Loader)
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


def key_path(loc: tuple) -> str:
    """A validation error's location as the config key a user writes: `a.b[0].c`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def config_error(e: ValidationError, prefix: str = "") -> ConfigError:
    """The first error as one line naming the key; an unknown key before anything it leaves missing (a
    misspelt key is both), with the closest known key."""
    errors = e.errors()
    err = next((x for x in errors if x["type"] in ("extra_forbidden", "extra_option")), errors[0])
    loc = prefix + key_path(err["loc"])
    msg = err["msg"].removeprefix("Value error, ").removeprefix("config error: ")
    shown = err["type"] in ("missing", "extra_option") or isinstance(err.get("input"), dict) or repr(err.get("input")) in msg
    got = "" if shown else f" (got {err['input']!r})"
    if err["type"] == "extra_forbidden":
        got, msg = "", "unknown key" + _closest(err["loc"][-1], [x["loc"][-1] for x in errors if x["type"] == "missing"])
    return ConfigError(f"config error: {loc.rstrip('.')}: {msg}{got}" if loc.rstrip(".") else f"config error: {msg}")


def _closest(key, missing: list) -> str:
    import difflib

    match = difflib.get_close_matches(str(key), [str(m) for m in missing], n=1)
    return f" (did you mean {match[0]}?)" if match else ""


def load_spec(model: type[BaseModel], path: str | Path | None = None, overrides: list[str] | None = None,
              what: str = "spec file"):
    """A job's spec: a YAML/JSON file (optional where every key has a default) plus `--set` overrides,
    validated by `model`; a one-line ConfigError naming the file or the key. Relative paths in a spec
    are relative to the working directory (the path rule, above)."""
    raw = {} if path is None else read_yaml(path, what)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path}: a mapping of keys, got {type(raw).__name__}")
    raw = deep_merge(raw, parse_overrides(overrides or []))
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise config_error(e) from None


def resolve(raw: dict, method: str | None = None, seed: int | None = None, overrides: list[str] | None = None) -> Config:
    """Merge shared sections, the method overlay and overrides; validate; return a frozen Config.

    `method` may be omitted when the config names it (`method.name`, as a resolved config does).
    Paths are kept as written: a relative one is relative to the working directory (the path rule)."""
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
    for section in ("model", "train", "optim", "rewards", "method", "determinism"):
        if section in merged and not isinstance(merged[section], dict):
            raise ConfigError(f"config error: {section}: must be a section of keys, got {merged[section]!r}")
    try:
        m = method_spec(method).config.model_validate(merged["method"])
    except ValidationError as e:
        raise config_error(e, "method.") from None
    try:
        return Config.model_validate({**merged, "method": m})
    except ValidationError as e:
        raise config_error(e) from None


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """A YAML (or JSON) file's content, read as YAML 1.2 (yes/no/on/off stay strings); a one-line
    ConfigError naming the file for a missing, unreadable or malformed one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Yaml12Loader)
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path}: YAML syntax error ({_yaml_problem(e)})") from None


def load_config(path: str | Path, method: str | None = None, seed: int | None = None,
                overrides: list[str] | None = None, section: str | None = None) -> Config:
    """Load a run config from a YAML/JSON file (or from its top-level key `section`, e.g. the Snakemake
    config's `training` block). Relative paths in it are relative to the working directory, not to
    the file (the path rule, above)."""
    path = Path(path)
    raw = read_yaml(path) or {}
    if section is not None:
        if not isinstance(raw, dict) or section not in raw:
            raise ConfigError(f"{section}: section missing from {path}")
        raw = raw[section]
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: a run config is a mapping of sections, got {type(raw).__name__}")
    return resolve(raw, method, seed, overrides)
