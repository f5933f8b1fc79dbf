"""The experiment a Snakemake config describes, declared once: its external inputs, reward settings,
methods, E-GRPO ablation variants and runs. The Snakefile, the tables and the figures read them from
here, and `check()` validates the whole config (every run config resolved, every reward and input
key present) before any job starts.

Every external path is written once, under `inputs:` (the FLUX directory, the prompt files, each
reward model's weights); run configs, the evaluation protocol and the figures take them from there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config, deep_merge, resolve
from .errors import ConfigError

RUN_DIR = "results/runs/{setting}/{method}/{variant}/seed{seed}"
RUN_LOG = f"{RUN_DIR}/final/log.jsonl"
EVAL_CSV = "results/eval/{setting}/{method}/{variant}/seed{seed}.csv"
BASE_EVAL_CSV = "results/eval/base.csv"
MAIN = "main"


@dataclass(frozen=True)
class Axis:
    """One ablation table: which E-GRPO method field it varies."""

    table: int
    key: str  # config key under `ablations:` and the method field it sets
    stem: str
    title: str


AXES = (
    Axis(2, "fixed_merge", "table2_merge", "Table 2: fixed vs adaptive merge length (E-GRPO)"),
    Axis(3, "active", "table3_steps", "Table 3: which steps are trained (E-GRPO)"),
    Axis(4, "tau", "table4_tau", "Table 4: entropy threshold tau (E-GRPO)"),
)
ACTIVE_LABELS = {"first4": "first 4 steps", "first8": "first 8 steps", "second8": "second 8 steps", "all": "all steps"}


def axis_value_label(axis: Axis, value: Any) -> str:
    if axis.key == "tau":
        return "tau = 0 (no merging)" if value == 0 else f"tau = {value:.1f}" if round(value, 1) == value else f"tau = {value:g}"
    if axis.key == "fixed_merge":
        return "adaptive" if value is None else f"fixed {value}-step merge"
    return ACTIVE_LABELS.get(value, f"steps {value}") if isinstance(value, str) else f"steps {list(value)}"


@dataclass(frozen=True)
class Variant:
    """An E-GRPO run variant: a name (a path part), the ablation table it belongs to, and the method
    field it sets; `main` sets nothing and is a row of every table, labelled from the resolved config."""

    name: str
    axis: Axis | None = None
    value: Any = None

    @property
    def overrides(self) -> dict:
        return {} if self.axis is None else {self.axis.key: self.value}

    @property
    def label(self) -> str:
        return "main" if self.axis is None else axis_value_label(self.axis, self.value)


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


class Experiment:
    """A validated view of the Snakemake config."""

    def __init__(self, config: dict):
        self.config = config
        self.inputs = config["inputs"]
        self.seeds = [int(s) for s in config["seeds"]]
        self.settings = dict(config["settings"])
        self.methods = list(config["methods"])
        self.ablation_setting = config["ablations"]["setting"]

    # ---- run configs ------------------------------------------------------------------------
    def reward_options(self, name: str) -> dict:
        return dict((self.inputs.get("rewards") or {}).get(name) or {})

    def setting_rewards(self, setting: str) -> dict:
        s = self.settings[setting]
        out = {"names": list(s["names"]), "options": {n: self.reward_options(n) for n in s["names"]}}
        for k in ("weights", "aggregation"):
            if k in s:
                out[k] = s[k]
        return out

    def raw_run_config(self, setting: str, method: str, variant: str = MAIN) -> dict:
        """The `training` block with the inputs, the setting's rewards and the variant applied."""
        inputs = {"model": {"path": self.inputs["model"]}, "train": {"prompts": self.inputs["prompts"]["train"]},
                  "rewards": self.setting_rewards(setting)}
        raw = deep_merge(self.config["training"], inputs)
        v = self.variant(variant)
        if v.overrides:
            raw = deep_merge(raw, {"methods": {method: {"method": v.overrides}}})
        return raw

    def run_config(self, setting: str, method: str, variant: str = MAIN, seed: int | None = None) -> Config:
        try:
            return resolve(self.raw_run_config(setting, method, variant), method, seed)
        except ConfigError as e:
            where = f"method {method}, setting {setting}" + ("" if variant == MAIN else f", variant {variant}")
            raise ConfigError(f"training.{str(e).removeprefix('config error: ')} ({where})") from None

    def run_config_dict(self, setting: str, method: str, variant: str = MAIN) -> dict:
        """The resolved run config of a (setting, method, variant), as written for its train job."""
        return self.run_config(setting, method, variant).to_dict()

    @property
    def main(self):
        """E-GRPO's main run config (the ablations' setting): its tau, active steps and merge rule
        label the main row of every ablation table."""
        return self.run_config(self.ablation_setting, "egrpo").method

    # ---- variants ---------------------------------------------------------------------------
    def axis_values(self, axis: Axis) -> list:
        return list(self.config["ablations"].get(axis.key, []) or [])

    def main_value(self, axis: Axis):
        m = self.main
        return m.active if axis.key == "active" else getattr(m, axis.key)

    @property
    def variants(self) -> list[Variant]:
        """Every E-GRPO variant the ablations ask for, main first."""
        return [Variant(MAIN)] + [Variant(variant_name(axis, value), axis, value)
                                  for axis in AXES for value in self.axis_values(axis)]

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise ConfigError(f"unknown variant {name!r} (variants: {', '.join(v.name for v in self.variants)})")

    def table_rows(self, axis: Axis) -> list[tuple[Variant, str, Any]]:
        """(variant, row label, x-value) of an ablation table, the main row read from the resolved
        config, sorted by x-value where it is numeric."""
        main = self.main_value(axis)
        rows = [(self.variant(MAIN), axis_value_label(axis, main) + " (main)", main)]
        rows += [(v, v.label, v.value) for v in self.variants if v.axis == axis]
        if axis.key in ("tau", "fixed_merge"):
            rows.sort(key=lambda r: float("inf") if r[2] is None else r[2])
        return rows

    def main_label(self) -> str:
        m = self.main
        merge = f"fixed {m.fixed_merge}-step merge" if m.fixed_merge else f"adaptive, tau = {m.tau:g}"
        return f"E-GRPO ({merge}, {axis_value_label(AXES[1], m.active)})"

    # ---- runs -------------------------------------------------------------------------------
    @property
    def configurations(self) -> list[tuple[str, str, str]]:
        """(setting, method, variant) of every run, seeds aside."""
        main = [(s, m, MAIN) for s in self.settings for m in self.methods]
        ablations = [(self.ablation_setting, "egrpo", v.name) for v in self.variants if v.name != MAIN]
        return main + ablations

    @property
    def runs(self) -> list[Run]:
        return [Run(s, m, v, seed) for s, m, v in self.configurations for seed in self.seeds]

    # ---- evaluation -------------------------------------------------------------------------
    def metrics(self) -> dict[str, dict]:
        """label -> {reward, options}: what the evaluation protocol scores."""
        return {label: {"reward": name, "options": self.reward_options(name)}
                for label, name in self.config["metrics"].items()}

    def eval_protocol(self) -> dict:
        e = self.config["eval"]
        return {"prompts": self.inputs["prompts"]["test"], "limit": e.get("test_limit"),
                "metrics": self.metrics(), "sampler": e["sampler"],
                "max_sequence_length": e.get("max_sequence_length", 512)}

    def variance_metric(self) -> dict:
        v = self.config.get("variance", {})
        label = v.get("metric", next(iter(self.config["metrics"])))
        return self.metrics()[label]

    # ---- validation -------------------------------------------------------------------------
    def check(self) -> None:
        """Everything a job would fail on that can be known before any job starts; one ConfigError
        naming the key. Files are checked when a job starts (a dry run plans without weights)."""
        from .methods import registry
        from .rewards import missing_options, reward_spec

        c = self.config
        for k, where in (("model", "path"), ("train", "prompts")):
            if where in (c["training"].get(k) or {}):
                raise ConfigError(f"training.{k}.{where}: written once under inputs ({'inputs.model' if k == 'model' else 'inputs.prompts.train'}); remove it here")
        for k in ("names", "options", "weights", "aggregation"):
            if k in (c["training"].get("rewards") or {}):
                raise ConfigError(f"training.rewards.{k}: set per reward setting (settings.<name>) and "
                                  "weights under inputs.rewards; remove it here")
        known = registry()
        for k, m in enumerate(self.methods):
            if m not in known:
                raise ConfigError(f"methods[{k}]: unknown method {m!r} (registered: {', '.join(known)})")
        if "egrpo" not in self.methods and any(self.axis_values(a) for a in AXES):
            raise ConfigError("ablations: the ablations vary E-GRPO, which is not in methods")
        if self.ablation_setting not in self.settings:
            raise ConfigError(f"ablations.setting: {self.ablation_setting!r} is not one of settings "
                              f"{list(self.settings)}")
        for s, spec in self.settings.items():
            for k, n in enumerate(spec["names"]):
                reward_spec(n, f"settings.{s}.names[{k}]")
        for label, n in c["metrics"].items():
            reward_spec(n, f"metrics.{label}")
        variance = c.get("variance", {})
        if "metric" in variance and variance["metric"] not in c["metrics"]:
            raise ConfigError(f"variance.metric: {variance['metric']!r} is not a metric label ({', '.join(c['metrics'])})")
        used = {n for s in self.settings.values() for n in s["names"]} | set(c["metrics"].values())
        for n in sorted(used):
            for key in missing_options(n, self.reward_options(n)):
                raise ConfigError(f"inputs.rewards.{n}.{key}: required by reward {n!r} "
                                  f"({reward_spec(n).source})")
        for axis in AXES:
            main = self.main_value(axis) if "egrpo" in self.methods else None
            for value in self.axis_values(axis):
                if value == main:
                    raise ConfigError(f"ablations.{axis.key}: {value!r} is the main run's own value "
                                      f"(training.methods.egrpo.method.{axis.key}); remove it")
        world = self.world_size("train")
        for s, m, v in self.configurations:
            cfg = self.run_config(s, m, v)
            if cfg.train.prompts_per_iteration % world:
                raise ConfigError(f"training.train.prompts_per_iteration: {cfg.train.prompts_per_iteration} is not "
                                  f"divisible by gpus.train = {world} processes (method {m}): groups stay whole on a rank")
        gpus = c.get("gpus", {})
        if gpus.get("train", 1) > gpus.get("per_node", 8):
            raise ConfigError(f"gpus.train: {gpus['train']} GPUs exceed gpus.per_node = {gpus.get('per_node', 8)}: "
                              "a training job runs on one node (torchrun --standalone)")
        from .evaluate import EvalSpec

        bad = set(c["eval"]["sampler"]) - set(EvalSpec.__dataclass_fields__)
        if bad:
            raise ConfigError(f"eval.sampler.{sorted(bad)[0]}: unknown key (known: {', '.join(EvalSpec.__dataclass_fields__)})")

    def world_size(self, kind: str) -> int:
        return max(1, int(self.config.get("gpus", {}).get(kind, 1)))


def dump(obj: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=2) + "\n")
