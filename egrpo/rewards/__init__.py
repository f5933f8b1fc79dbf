"""Reward registry: one signature for every scorer, training and evaluation alike.

A reward is built by a factory `factory(options: dict, device) -> Reward`, and a Reward is called as
`reward(images [B, 3, H, W] float in [0, 1], prompts: list[str]) -> Tensor [B]` (fp32). Each entry
declares its options as a typed model (the keys it cannot run without, its weight paths, are the
model's required fields) and where those weights come from, and may declare which prompts it can
score, so a config is checked against the registry before any model loads: a misspelt or mistyped
option is an error naming the key, never a default silently used. This module imports nothing heavy:
factories are imported on first use. A scorer that fails raises; it never returns a default.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Callable, Protocol, Sequence

from pydantic import AfterValidator, Field, ValidationError

from ..errors import ConfigError, NonFiniteRewardError, WeightsMissingError
from ..strict import Strict, key_error, relocate

if TYPE_CHECKING:
    import torch


class Reward(Protocol):
    def __call__(self, images: "torch.Tensor", prompts: Sequence[str]) -> "torch.Tensor": ...


# ---- options: one typed model per kind of reward ------------------------------------------------
class NoOptions(Strict):
    """A reward without options (any key is an error)."""


class HpsOptions(Strict):
    checkpoint: str = Field(description="HPS_v2.1_compressed.pt (hpsv20: HPS_v2_compressed.pt)")
    model: str = Field("ViT-H-14", description="an open_clip model name, or a model-config JSON")


class ClipOptions(Strict):
    checkpoint: str = Field(description="the open_clip model directory (or a weights file with `model`)")
    model: str | None = Field(None, description="an open_clip model name or config JSON (beside a weights file)")


class PickScoreOptions(Strict):
    model_dir: str = Field(description="PickScore_v1 (save_pretrained directory)")
    processor_dir: str = Field(description="the CLIP-ViT-H-14 processor directory")


class ImageRewardOptions(Strict):
    checkpoint: str = Field(description="ImageReward.pt")
    med_config: str = Field(description="med_config.json")
    tokenizer_dir: str = Field(description="a bert-base-uncased tokenizer directory")


class CriticOptions(Strict):
    critic: str = Field(description="the world's critic.pt")


class ChannelOptions(Strict):
    channel: int = Field(0, ge=0, le=2, description="the colour channel rewarded: 0 red, 1 green, 2 blue")


@dataclass(frozen=True)
class RewardSpec:
    """A registered reward: its factory (a callable, or "module:function" imported on first build), its
    options' model, where their files come from, and (optionally) a check of the prompts it can score
    ("module:function" raising ValueError naming the first prompt it cannot)."""

    name: str
    factory: Callable | str
    options: type[Strict] = NoOptions
    source: str = ""
    label: str = ""  # how tables and figures name it
    prompts: Callable | str | None = None

    @property
    def title(self) -> str:
        return self.label or self.name

    @property
    def needs(self) -> tuple[str, ...]:
        """The option keys it cannot run without (its options' required fields)."""
        return tuple(k for k, f in self.options.model_fields.items() if f.is_required())


HPS_SOURCE = ("HPS_v2.1_compressed.pt from the Hugging Face repo xswu/HPSv2 (a dict with 'state_dict' for "
              "open_clip ViT-H-14)")
HPS20_SOURCE = HPS_SOURCE.replace("HPS_v2.1_compressed.pt", "HPS_v2_compressed.pt")
CLIP_SOURCE = ("the open_clip model directory of the Hugging Face repo apple/DFN5B-CLIP-ViT-H-14-378, named "
               "DFN5B-CLIP-ViT-H-14-384 in MixGRPO's scripts (open_clip_config.json and open_clip_pytorch_model.bin; "
               "`huggingface-cli download apple/DFN5B-CLIP-ViT-H-14-378 --local-dir DIR`)")
PICK_SOURCE = ("the save_pretrained directories of the Hugging Face repos yuvalkirstain/PickScore_v1 (model_dir) and "
               "laion/CLIP-ViT-H-14-laion2B-s32B-b79K (processor_dir)")
IR_SOURCE = ("ImageReward.pt and med_config.json from the Hugging Face repo THUDM/ImageReward, and a "
             "bert-base-uncased tokenizer directory (vocab.txt) as tokenizer_dir")

REWARDS: dict[str, RewardSpec] = {}


def register(name: str, factory: Callable | str | None = None, *, options: type[Strict] = NoOptions, source: str = "",
             label: str = "", prompts: Callable | str | None = None):
    """Add a reward to the registry; without `factory`, a decorator of the factory."""
    if factory is None:
        return lambda f: register(name, f, options=options, source=source, label=label, prompts=prompts) and f
    REWARDS[name] = RewardSpec(name, factory, options, source, label, prompts)
    return REWARDS[name]


WORLD_CAPTIONS = "egrpo.world.shapes:check_captions"  # the world's scorers read colour, shape and position off the prompt

for _spec in (
    RewardSpec("hpsv21", "egrpo.rewards.real:hps_v21", HpsOptions, HPS_SOURCE, "HPS v2.1"),
    RewardSpec("hpsv20", "egrpo.rewards.real:hps_v20", HpsOptions, HPS20_SOURCE, "HPS v2.0"),
    RewardSpec("clip_score", "egrpo.rewards.real:clip_score", ClipOptions, CLIP_SOURCE, "CLIP score"),
    RewardSpec("pickscore", "egrpo.rewards.real:pickscore", PickScoreOptions, PICK_SOURCE, "PickScore"),
    RewardSpec("imagereward", "egrpo.rewards.imagereward:imagereward", ImageRewardOptions, IR_SOURCE, "ImageReward"),
    RewardSpec("world_preference", "egrpo.rewards.world:preference", label="preference score (world)",
               prompts=WORLD_CAPTIONS),
    RewardSpec("world_alignment", "egrpo.rewards.world:alignment", label="alignment score (world)",
               prompts=WORLD_CAPTIONS),
    RewardSpec("world_realism", "egrpo.rewards.world:realism", label="realism score (world)", prompts=WORLD_CAPTIONS),
    RewardSpec("world_fidelity", "egrpo.rewards.world:fidelity", CriticOptions,
               "the world's critic.pt, written by `egrpo world build` (rule world_build)", "fidelity critic (world)",
               WORLD_CAPTIONS),
    RewardSpec("brightness", "egrpo.rewards.simple:brightness", label="mean brightness"),
    RewardSpec("channel", "egrpo.rewards.simple:channel", ChannelOptions, label="colour channel excess"),
):
    REWARDS[_spec.name] = _spec


def reward_spec(name: str, key: str = "rewards.names") -> RewardSpec:
    """The registry entry of `name`; a ConfigError naming `key` for an unknown reward."""
    if name not in REWARDS:
        raise ConfigError(f"{key}: unknown reward {name!r} (registered: {', '.join(sorted(REWARDS))})")
    return REWARDS[name]


def _registered(name: str) -> str:
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r} (registered: {', '.join(sorted(REWARDS))})")
    return name


# a spec field holding a reward's name: an unknown one is an error naming the field
RewardName = Annotated[str, AfterValidator(_registered)]


def missing_options(name: str, options: dict | None) -> list[str]:
    """Required option keys of reward `name` that `options` does not set (files are not checked)."""
    return [k for k in reward_spec(name).needs if not (options or {}).get(k)]


def check_options(name: str, options: Any, loc: tuple = (), required: bool = True) -> dict:
    """Reward `name`'s options checked against its options model, for a spec's validator: an unknown
    key (with the closest option), a wrong type or (`required`) a missing required key raises an error
    located at `loc` + the key (pydantic prefixes the validator's own location). Returns the options as
    given (defaults are the factory's to apply: a run config records what the user wrote)."""
    import difflib

    spec = REWARDS[name]
    if not isinstance(options, dict):
        raise key_error(loc, f"the options of reward {name!r}: a mapping of keys", options)
    fields = list(spec.options.model_fields)
    for key in options:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"did you mean {close[0]}?" if close else \
                f"its options: {', '.join(fields)}" if fields else "it takes none"
            raise key_error(loc + (key,), f"not an option of reward {name!r} ({hint})", options[key], "extra_option")
    missing = missing_options(name, options)
    for key in missing if required else ():
        raise key_error(loc + (key,), f"required by reward {name!r} ({spec.source})", None, "missing")
    try:
        spec.options.model_validate({**dict.fromkeys(missing, ""), **options})
    except ValidationError as e:
        raise relocate(e, loc) from None
    return options


def check_prompts(names: Sequence[str], prompts: Sequence[str], key: str) -> None:
    """Every prompt scorable by every reward of `names` (a reward that reads its prompts, as the world's
    scorers read a caption, declares which it can score): a one-line ConfigError naming `key`, the
    prompt and the reward, before any model loads."""
    for name in dict.fromkeys(names):
        check = reward_spec(name, "reward").prompts
        if check is None:
            continue
        if isinstance(check, str):
            module, attr = check.split(":")
            check = getattr(importlib.import_module(module), attr)
        try:
            check(prompts)
        except ValueError as e:
            raise ConfigError(f"{key}: {e}, which reward {name!r} cannot score") from None


def check_inputs(names: Sequence[str], options_of: Callable[[str], dict | None]) -> None:
    """Every weight path rewards `names` need is set and exists (a one-line WeightsMissingError naming the
    key, the path and where the weights come from): checked before any model loads."""
    for name in dict.fromkeys(names):
        for key in reward_spec(name, "reward").needs:
            require(options_of(name) or {}, key, name)


def option_key(reward: str, key: str) -> str:
    """Where a user sets a reward option: the Snakemake config's inputs, or a run config's options."""
    return f"inputs.rewards.{reward}.{key} (a run config: rewards.options.{reward}.{key})"


def require(options: dict, key: str, reward: str) -> str:
    """A weight path from the options; a one-line error naming the config key, the path and the source
    of the weights when it is unset or does not exist."""
    from pathlib import Path

    path, source = options.get(key), reward_spec(reward).source
    if not path:
        raise WeightsMissingError(f"reward {reward!r} needs {option_key(reward, key)}: {source}")
    if not Path(path).exists():
        raise WeightsMissingError(f"{option_key(reward, key)} = {path} does not exist. Expected {source}")
    return str(path)


def build_reward(name: str, options: dict | None = None, device="cpu") -> Reward:
    """Reward `name` built from its options (checked against its options model) and `precision` (the
    run's rewards.precision or the protocol's: fp32, amp or bf16, which a reward without a model ignores)."""
    import torch

    spec = reward_spec(name, "reward")
    try:  # a missing weight path is the factory's to name, with where the weights come from
        check_options(name, {k: v for k, v in (options or {}).items() if k != "precision"}, required=False)
    except ValidationError as e:
        from ..config import config_error

        raise config_error(e, f"reward {name} options: ") from None
    factory = spec.factory
    if isinstance(factory, str):
        module, attr = factory.split(":")
        factory = getattr(importlib.import_module(module), attr)
    return factory(dict(options or {}), torch.device(device))


def score(reward: Reward, name: str, images: "torch.Tensor", prompts: Sequence[str], batch: int | None = None):
    """Call a reward (in chunks of `batch` images) and check its output: shape [B], finite, on the CPU.
    Raises loudly otherwise."""
    import torch

    prompts = list(prompts)
    step = batch or len(images) or 1
    parts = []
    for lo in range(0, len(images), step):
        chunk = images[lo:lo + step]
        out = torch.as_tensor(reward(chunk, prompts[lo:lo + step]), dtype=torch.float32).detach().cpu()
        if out.shape != (len(chunk),):
            raise ValueError(f"reward {name!r} returned shape {tuple(out.shape)}, expected ({len(chunk)},)")
        parts.append(out)
    out = torch.cat(parts) if parts else torch.zeros(0)
    if not torch.isfinite(out).all():
        bad = [k for k in range(len(out)) if not torch.isfinite(out[k])]
        error = NonFiniteRewardError(f"reward {name!r} returned non-finite values for samples {bad}")
        error.samples = bad
        raise error
    return out
