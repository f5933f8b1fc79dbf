"""The experiment a Snakemake config describes, as one validated model: its external inputs, reward
settings, methods, ablation variants and runs. The Snakefile, the tables and the figures read it from
here. Everything a job would fail on that can be known before any job starts is a rule of the model
(every run config resolved, every reward and input key present), so a bad config is one line naming
the key; files are checked when a job starts (a dry run plans without weights).

Every external path is written once, under `inputs:` (the FLUX directory, the prompt files, each
reward model's weights); run configs, the evaluation protocol and the figures take them from there.
The Snakemake JSON schema and config/README.md's key tables are generated from this model
(`egrpo schema`, egrpo/schema.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, NonNegativeInt, ValidationError, field_validator, model_validator

from .config import Config, DeterminismConfig, RewardChoice, Strict, config_error, deep_merge, read_yaml, resolve
from .errors import ConfigError
from .methods import Axis, MethodName, method_spec
from .plans import EGRPOMethod
from .protocol import Metric, PromptLimit, Protocol, ProtocolSettings, VarianceSettings, VarianceSpec
from .rewards import RewardName, check_options, missing_options, reward_spec
from .world.spec import WorldSpec

RUN_DIR = "results/runs/{setting}/{method}/{variant}/seed{seed}"
RUN_LOG = f"{RUN_DIR}/final/log.jsonl"
EVAL_CSV = "results/eval/{setting}/{method}/{variant}/seed{seed}.csv"
BASE_EVAL_CSV = "results/eval/base.csv"
MAIN = "main"

# run config keys the Snakemake config states elsewhere: each path once under inputs, the rewards per setting
ELSEWHERE = {"model": {"path": "inputs.model"}, "train": {"prompts": "inputs.prompts.train"},
             "rewards": {k: "settings.<name> (reward options: inputs.rewards)"
                         for k in (*RewardChoice.model_fields, "options")}}
# run config sections the Snakemake config states once at its top level, for every job
TOP_LEVEL = ("determinism",)


@dataclass(frozen=True)
class Variant:
    """A run variant of an ablated method: a name (a path part), the ablation table it belongs to, and
    the method field it sets; `main` sets nothing and is a row of every table, labelled from the
    resolved config."""

    name: str
    axis: Axis | None = None
    value: Any = None

    @property
    def overrides(self) -> dict:
        return {} if self.axis is None else {self.axis.key: self.value}

    @property
    def label(self) -> str:
        return "main" if self.axis is None else self.axis.label(self.value)


def variant_name(axis: Axis, value: Any) -> str:
    text = "_".join(map(str, value)) if isinstance(value, (list, tuple)) else f"{value:g}" if isinstance(value, float) else str(value)
    return f"{axis.key}-{text}"


@dataclass(frozen=True)
class Run:
    setting: str
    method: str
    variant: str
    seed: int

    @property
    def dir(self) -> str:
        return RUN_DIR.format(setting=self.setting, method=self.method, variant=self.variant, seed=self.seed)


# ---- sections ---------------------------------------------------------------------------------
class Prompts(Strict):
    """Prompt files: .txt (one a line), .json/.jsonl/.csv/.parquet (column `prompt`), or a saved
    `datasets` directory."""

    train: str = Field(description="the training prompts")
    test: str = Field(description="the test prompts")


class Inputs(Strict):
    """Every external file or directory, written once; run configs, metrics and figures read them here."""

    model: str = Field(description="diffusers Flux-format directory (FLUX.1-dev: `huggingface-cli download "
                       "black-forest-labs/FLUX.1-dev --local-dir DIR`), or the world's base model")
    prompts: Prompts
    rewards: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="reward -> its options (weight paths; the keys each reward needs: "
        "config/README.md, Reward inputs); every rule that scores with the reward reads them here")

    @field_validator("rewards")
    @classmethod
    def _registered(cls, rewards: dict) -> dict:
        """Registered rewards only, each with the options its model declares."""
        for name, options in rewards.items():
            reward_spec(name, f"inputs.rewards.{name}")
            if "precision" in (rewards[name] or {}):
                raise ValueError(f"{name}.precision: the precision is set by training.rewards.precision (training "
                                 "rewards) and eval.precision (the metrics); remove it here")
            check_options(name, options or {}, (name,))
        return rewards


class Setting(RewardChoice):
    """A reward setting of Table 1: the rewards its runs train on."""

    constructed: list[MethodName] = Field(
        default_factory=list, description="methods whose release has no code for this setting: their rows are "
        "the harness's construction (Table 1's note says so)")


class Ablations(Strict):
    """Variants of the ablated methods (Tables 2-4 for E-GRPO), trained on one reward setting."""

    setting: str = Field(description="the reward setting the variants train on")
    methods: dict[str, dict[str, list[Any]]] = Field(
        default_factory=dict, description="method -> its config field -> values other than the main run's, "
        "one variant each (E-GRPO: `fixed_merge`, `active`, `tau`: Tables 2-4)")


class EvalSection(ProtocolSettings):
    """The evaluation protocol of every run and of the base model (results/configs/eval/, a file named by its content)."""

    test_limit: PromptLimit = Field(None, description="the first N test prompts only (null: all)")
    with_training: bool = Field(False, description="evaluate each run inside its train job (one process start "
                                "per run instead of two; CPU configs)")


class Qualitative(Strict):
    """Figs. 5-7: prompts rendered by the base model and each method's first-seed model, same seeds."""

    prompts: list[str] = Field(default_factory=list, min_length=1, description="the prompts of the figure's rows")


class VarianceSection(VarianceSettings):
    """Fig. 1a: the reward spread of one SDE step per timestep, unmerged and merged."""

    metric: str | None = Field(None, description="the metric label whose reward spread is shown (default: the "
                               "first metric; the paper's is the CLIP score)")


class Gpus(Strict):
    """GPUs per job (0 = CPU only)."""

    train: int = Field(1, ge=0, description="GPUs of a training job: more than 1 launches torchrun with one "
                       "process per GPU, on one node")
    eval: int = Field(1, ge=0, le=1, description="GPUs of an evaluation job")
    per_node: int = Field(8, ge=1, description="GPUs of one node; a training job must fit on one")


class Experiment(Strict):
    """A Snakemake config of the E-GRPO reproduction (config/config.yaml, config/flux.yaml): validated
    as a whole, every run config resolved, before any job starts."""

    world: WorldSpec | None = None
    inputs: Inputs
    seeds: list[NonNegativeInt] = Field(min_length=1, description="training seeds; every (setting, method, variant) is "
                             "trained once per seed")
    methods: list[MethodName] = Field(min_length=1, description="registered methods (egrpo.methods)")
    settings: dict[str, Setting] = Field(min_length=1, description="reward settings of Table 1: name -> the "
                                         "rewards its runs train on")
    ablations: Ablations
    metrics: dict[str, RewardName] = Field(min_length=1, description="table column -> the registered reward "
                                           "that scores it (options from inputs.rewards)")
    metric_scales: dict[str, str] = Field(default_factory=dict, description="metric label -> how its scale is "
                                          "stated under the tables")
    compare_paper: bool = Field(False, description="put the paper's value and the difference beside each "
                                "number (FLUX)")
    eval: EvalSection
    qualitative: Qualitative = Field(default_factory=Qualitative)
    variance: VarianceSection = Field(default_factory=VarianceSection)
    gpus: Gpus = Field(default_factory=Gpus)
    group_seeds: bool = Field(False, description="one train job per (setting, method, variant) trains every "
                              "seed in turn (pays the imports once; CPU configs)")
    determinism: DeterminismConfig = Field(
        default_factory=DeterminismConfig, description="which kernels every job may run (egrpo/determinism.py; "
        "README, What is bit-identical where), written once: the run configs, the evaluation protocol and the "
        "world's spec carry it, the tables and figures apply it")
    training: dict[str, Any] = Field(description="the run config of `egrpo train` (egrpo/config.py) without "
                                     "paths or rewards: `name`, `model`, `train`, `optim`, `method`, and "
                                     "per-method overlays under `methods.<name>`")

    @field_validator("seeds", "methods")
    @classmethod
    def _once(cls, values: list, info) -> list:
        """A seed twice would be one run counted as two seeds; a method twice, one set of rows twice."""
        for k, v in enumerate(values):
            if v in values[:k]:
                raise ValueError(f"{v!r} twice ({info.field_name}[{k}])")
        return values

    @model_validator(mode="after")
    def _check(self):
        """The cross-field rules; each error names its key (pydantic adds no location here)."""
        overlays = [("", self.training)] + [(f"methods.{m}.", o) for m, o in (self.training.get("methods") or {}).items()]
        for overlay, raw in overlays:
            for section, keys in ELSEWHERE.items():
                for key in keys:
                    if key in ((raw or {}).get(section) or {}):
                        raise ValueError(f"training.{overlay}{section}.{key}: written under {keys[key]}; remove it here")
            for section in TOP_LEVEL:
                if section in (raw or {}):
                    raise ValueError(f"training.{overlay}{section}: set once at the top level ({section}:), "
                                     "which every job applies; remove it here")
        if self.world is not None and "determinism" in self.world.model_fields_set:
            raise ValueError("world.determinism: set once at the top level (determinism:), which every job "
                             "applies; remove it here")
        for s, setting in self.settings.items():
            for k, m in enumerate(setting.constructed):
                if m not in self.methods:
                    raise ValueError(f"settings.{s}.constructed[{k}]: {m!r} is not one of methods {self.methods}")
        a = self.ablations
        if a.setting not in self.settings:
            raise ValueError(f"ablations.setting: {a.setting!r} is not one of settings {list(self.settings)}")
        for m, fields in a.methods.items():
            if m not in self.methods:
                raise ValueError(f"ablations.methods.{m}: {m!r} is not one of methods {self.methods}")
            known = [f for f in method_spec(m).config.model_fields if f != "name"]
            for key, values in fields.items():
                if key not in known:
                    raise ValueError(f"ablations.methods.{m}.{key}: not a field of {m}'s method config "
                                     f"(fields: {', '.join(known)})")
                names = [variant_name(Axis(key, "", ""), v) for v in values]
                for k, name in enumerate(names):
                    if name in names[:k]:
                        raise ValueError(f"ablations.methods.{m}.{key}[{k}]: {values[k]!r} twice")
        if self.variance.metric is not None and self.variance.metric not in self.metrics:
            raise ValueError(f"variance.metric: {self.variance.metric!r} is not a metric label ({', '.join(self.metrics)})")
        for label in self.metric_scales:
            if label not in self.metrics:
                raise ValueError(f"metric_scales.{label}: not a metric label ({', '.join(self.metrics)})")
        used = {n for s in self.settings.values() for n in s.names} | set(self.metrics.values())
        for n in sorted(used):
            for key in missing_options(n, self.reward_options(n)):
                raise ValueError(f"inputs.rewards.{n}.{key}: required by reward {n!r} ({reward_spec(n).source})")
        if self.gpus.train > self.gpus.per_node:
            raise ValueError(f"gpus.train: {self.gpus.train} GPUs exceed gpus.per_node = {self.gpus.per_node}: "
                             "a training job runs on one node (torchrun --standalone)")
        for m in self.ablated:
            for axis in self.axes(m):
                main = self.main_value(m, axis)
                for value in self.axis_values(m, axis):
                    if value == main:
                        raise ValueError(f"ablations.methods.{m}.{axis.key}: {value!r} is the main run's own value "
                                         f"(training.methods.{m}.method.{axis.key}); remove it")
        world = self.world_size("train")
        for (s, m, v), cfg in self.run_configs.items():
            if cfg.train.prompts_per_iteration % world:
                raise ValueError(f"training.train.prompts_per_iteration: {cfg.train.prompts_per_iteration} is not "
                                 f"divisible by gpus.train = {world} processes (method {m}): groups stay whole on a rank")
        return self

    # ---- loading ----------------------------------------------------------------------------
    @classmethod
    def load(cls, config: dict) -> "Experiment":
        """The validated experiment of a Snakemake config; a one-line ConfigError naming the key."""
        if not isinstance(config, dict):
            raise ConfigError(f"config error: a Snakemake config is a mapping of keys, got {type(config).__name__}")
        try:
            return cls.model_validate(config)
        except ValidationError as e:
            raise config_error(e) from None

    @classmethod
    def from_files(cls, paths: list[str | Path]) -> "Experiment":
        """The experiment of config files merged in order, as `snakemake --configfile A B` merges them."""
        config: dict = {}
        for path in paths:
            config = deep_merge(config, read_yaml(path) or {})
        return cls.load(config)

    # ---- run configs ------------------------------------------------------------------------
    def reward_options(self, name: str) -> dict:
        return dict(self.inputs.rewards.get(name) or {})

    def raw_run_config(self, setting: str, method: str, variant: str = MAIN) -> dict:
        """The `training` block with the inputs, the determinism setting, the setting's rewards and the
        variant applied."""
        s = self.settings[setting]
        rewards = {**s.model_dump(include=set(RewardChoice.model_fields)),
                   "options": {n: self.reward_options(n) for n in s.names}}
        inputs = {"model": {"path": self.inputs.model}, "train": {"prompts": self.inputs.prompts.train},
                  "rewards": rewards, "determinism": self.determinism.model_dump()}
        raw = deep_merge(self.training, inputs)
        v = self.variant(method, variant)
        if v.overrides:
            raw = deep_merge(raw, {"methods": {method: {"method": v.overrides}}})
        return raw

    def run_config(self, setting: str, method: str, variant: str = MAIN, seed: int | None = None) -> Config:
        if seed is None and (setting, method, variant) in self.__dict__.get("run_configs", {}):
            return self.run_configs[(setting, method, variant)]
        try:
            return resolve(self.raw_run_config(setting, method, variant), method, seed)
        except ConfigError as e:
            where = f"method {method}, setting {setting}" + ("" if variant == MAIN else f", variant {variant}")
            raise ConfigError(f"training.{str(e).removeprefix('config error: ')} ({where})") from None

    @cached_property
    def run_configs(self) -> dict[tuple[str, str, str], Config]:
        """The resolved run config of every (setting, method, variant) (resolved once)."""
        return {c: self.run_config(*c) for c in self.configurations}

    def run_config_dict(self, setting: str, method: str, variant: str = MAIN) -> dict:
        """The resolved run config of a (setting, method, variant), as written for its train job."""
        return self.run_config(setting, method, variant).to_dict()

    def main_config(self, method: str) -> Config:
        """A method's main run config on the ablations' setting: it labels the main row of its tables."""
        return self.run_config(self.ablations.setting, method)

    # ---- ablations --------------------------------------------------------------------------
    @property
    def ablated(self) -> list[str]:
        """Methods with ablation tables: those whose registration declares the paper's (E-GRPO's
        Tables 2-4) and those the config ablates, in the order of `methods`."""
        return [m for m in self.methods if method_spec(m).axes or self.ablations.methods.get(m)]

    def axes(self, method: str) -> list[Axis]:
        """The ablation tables of a method: its registered ones, then any other field the config ablates."""
        spec = method_spec(method)
        extra = [k for k in self.ablations.methods.get(method, {}) if k not in {a.key for a in spec.axes}]
        return list(spec.axes) + [spec.axis(k) for k in extra]

    def axis_values(self, method: str, axis: Axis) -> list:
        return list(self.ablations.methods.get(method, {}).get(axis.key, []))

    def main_value(self, method: str, axis: Axis):
        return getattr(self.main_config(method).method, axis.key)

    def variants(self, method: str) -> list[Variant]:
        """Every variant of a method the ablations ask for, main first."""
        return [Variant(MAIN)] + [Variant(variant_name(axis, value), axis, value)
                                  for axis in self.axes(method) for value in self.axis_values(method, axis)]

    def variant(self, method: str, name: str) -> Variant:
        for v in self.variants(method):
            if v.name == name:
                return v
        raise ConfigError(f"unknown variant {name!r} of {method} (variants: "
                          f"{', '.join(v.name for v in self.variants(method))})")

    @property
    def tables(self) -> list[tuple[str, Axis]]:
        """(method, axis) of every ablation table."""
        return [(m, axis) for m in self.ablated for axis in self.axes(m)]

    def table_rows(self, method: str, axis: Axis) -> list[tuple[Variant, str, Any]]:
        """(variant, row label, x-value) of an ablation table, the main row read from the resolved
        config, sorted by x-value where the values are numbers (None, e.g. adaptive merging, last)."""
        main = self.main_value(method, axis)
        rows = [(Variant(MAIN), axis.label(main) + " (main)", main)]
        rows += [(v, v.label, v.value) for v in self.variants(method)[1:] if v.axis.key == axis.key]
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) or x is None for _, _, x in rows):
            rows.sort(key=lambda r: float("inf") if r[2] is None else r[2])
        return rows

    # ---- runs -------------------------------------------------------------------------------
    @property
    def configurations(self) -> list[tuple[str, str, str]]:
        """(setting, method, variant) of every run, seeds aside."""
        main = [(s, m, MAIN) for s in self.settings for m in self.methods]
        return main + [(self.ablations.setting, m, v.name) for m in self.ablated for v in self.variants(m)[1:]]

    @property
    def runs(self) -> list[Run]:
        return [Run(s, m, v, seed) for s, m, v in self.configurations for seed in self.seeds]

    def world_size(self, kind: str) -> int:
        return max(1, getattr(self.gpus, kind))

    def world_spec(self) -> WorldSpec:
        """The world's spec as `egrpo world build` and `egrpo world pretrain` read it, with the top-level
        determinism setting."""
        return self.world.model_copy(update={"determinism": self.determinism})

    # ---- evaluation and figures -------------------------------------------------------------
    def metric_specs(self) -> dict[str, Metric]:
        """label -> the metric the evaluation protocol scores (its reward and options)."""
        return {label: Metric(reward=name, options=self.reward_options(name)) for label, name in self.metrics.items()}

    def eval_protocol(self) -> Protocol:
        e = self.eval
        return Protocol(prompts=self.inputs.prompts.test, limit=e.test_limit, metrics=self.metric_specs(),
                        determinism=self.determinism, **e.model_dump(include=set(ProtocolSettings.model_fields)))

    @property
    def merge_method(self) -> str | None:
        """The first method with E-GRPO's merge rule: Figs. 1a and 1b show its main run's schedule."""
        return next((m for m in self.methods if issubclass(method_spec(m).config, EGRPOMethod)), None)

    def variance_spec(self) -> VarianceSpec:
        v = self.variance
        label = v.metric or next(iter(self.metrics))
        return VarianceSpec(run=self.main_config(self.merge_method), prompts=self.inputs.prompts.test,
                            metric=self.metric_specs()[label], limit=v.limit, group_size=v.group_size)
