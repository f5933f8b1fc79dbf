"""The method registry: name -> (config class, rollout plan, display name), declared once per method.

Each method registers itself where it is defined (`register(MethodSpec(...))` at the bottom of its
module). The registry imports the modules that hold methods: this repository's own, found on disk
(E-GRPO in `egrpo.plans`, every module of the `baselines` package: a new baseline is one new file,
and a plain checkout that was never pip-installed has them all), then the `egrpo.methods` entry-point
group, which stays for methods that live in other packages (plugins). egrpo never imports a baseline
by name. The config, the CLI, the Snakefile, the tables and the figures all read this registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal

from pydantic import AfterValidator, Field, model_validator

from .errors import ConfigError
from .strict import Strict


class MethodConfig(Strict):
    """Fields every method has: schedule (T steps, time shift), group size G, SDE noise level, and
    what one optimizer step covers. Each method's defaults live in its own subclass."""

    name: str
    num_steps: int = Field(16, ge=2)
    shift: float = Field(3.0, gt=0)
    group_size: int = Field(12, ge=2)
    eta: float = Field(0.7, gt=0)
    update: Literal["iteration", "rollout", "samples"] = Field(
        "iteration", description="what one AdamW step covers: the whole iteration (the E-GRPO paper's Alg. 1), "
        "one rollout group (E-GRPO's releases: a step per active step), or `samples_per_update` samples of "
        "every group (DanceGRPO's and MixGRPO's gradient accumulation)")
    samples_per_update: int | None = Field(None, ge=1, description="with update = samples: samples of each "
                                           "group accumulated into one step")

    @model_validator(mode="after")
    def _update(self):
        if self.update == "samples" and self.samples_per_update is None:
            raise ValueError("update = samples needs samples_per_update")
        return self


@dataclass(frozen=True)
class Axis:
    """An ablation table of a method: the config field its variants vary, the file stem and title of
    its table, how a value is named in a row, and (optionally) a figure of it with its x-axis label."""

    key: str
    stem: str
    title: str
    label: Callable[[Any], str] = lambda value: str(value)
    figure: str | None = None
    xlabel: str = ""


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: `plan(config)` builds its RolloutPlan; `axes` are the paper's ablation
    tables of its fields (a field the Snakemake config ablates without one gets a generic table)."""

    name: str
    config: type[MethodConfig]
    plan: type
    display: str
    axes: tuple[Axis, ...] = ()

    def axis(self, key: str) -> Axis:
        """The registered table of field `key`, or a generic one."""
        for axis in self.axes:
            if axis.key == key:
                return axis
        return Axis(key, f"ablation_{self.name}_{key}", f"Ablation: {key} ({self.display})",
                    lambda value: f"{key} = {value}")


_REGISTRY: dict[str, MethodSpec] = {}
_LOADED = False


def register(spec: MethodSpec) -> MethodSpec:
    _REGISTRY[spec.name] = spec
    return spec


IN_REPO = ("egrpo.plans", "baselines")  # modules, or packages whose every module is imported


def in_repo_modules() -> list[str]:
    """The modules of this repository that define methods: egrpo.plans and every module of the
    `baselines` package (discovered, so adding a baseline edits no list)."""
    import importlib
    import pkgutil

    names = []
    for name in IN_REPO:
        module = importlib.import_module(name)
        names.append(name)
        if hasattr(module, "__path__"):  # a package: all of its modules, in name order
            names += sorted(f"{name}.{m.name}" for m in pkgutil.iter_modules(module.__path__) if not m.name.startswith("_"))
    return names


def registry() -> dict[str, MethodSpec]:
    """Every registered method: this repository's (imported from disk, installed or not), then any
    plugin's `egrpo.methods` entry points; loaded once."""
    global _LOADED
    if not _LOADED:
        import importlib
        from importlib.metadata import entry_points

        for name in in_repo_modules():
            importlib.import_module(name)
        for ep in entry_points(group="egrpo.methods"):
            ep.load()
        _LOADED = True
        if not _REGISTRY:
            raise ConfigError("no methods are registered: egrpo.plans and baselines/ define none (a broken checkout?)")
    return _REGISTRY


def method_spec(name: str) -> MethodSpec:
    methods = registry()
    if name not in methods:
        raise ConfigError(f"method: unknown method {name!r} (registered: {', '.join(methods)})")
    return methods[name]


def _registered(name: str) -> str:
    if name not in registry():
        raise ValueError(f"unknown method {name!r} (registered: {', '.join(registry())})")
    return name


# a spec field holding a method's name: an unknown one is an error naming the field
MethodName = Annotated[str, AfterValidator(_registered)]


def display_name(name: str) -> str:
    """Row label of a method in tables and figures ('Base model' for the untrained base)."""
    return "Base model" if name == "base" else method_spec(name).display


def build_plan(m: MethodConfig):
    """The method's RolloutPlan, built from its validated config."""
    return method_spec(m.name).plan(m)
