"""Reward registry: one signature for every scorer, training and evaluation alike.

A reward is built by a factory `factory(options: dict, device) -> Reward`, and a Reward is called as
`reward(images [B, 3, H, W] float in [0, 1], prompts: list[str]) -> Tensor [B]` (fp32). Each entry
declares the option keys it cannot run without (its weight paths) and where those weights come
from, so a config is checked against the registry before any model loads. This module imports
nothing heavy: factories are imported on first use. A scorer that fails raises; it never returns a
default.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Callable, Protocol, Sequence

from pydantic import AfterValidator

from ..errors import ConfigError, NonFiniteRewardError, WeightsMissingError

if TYPE_CHECKING:
    import torch


class Reward(Protocol):
    def __call__(self, images: "torch.Tensor", prompts: Sequence[str]) -> "torch.Tensor": ...


@dataclass(frozen=True)
class RewardSpec:
    """A registered reward: its factory (a callable, or "module:function" imported on first build),
    the option keys it requires and where their files come from."""

    name: str
    factory: Callable | str
    needs: tuple[str, ...] = ()
    source: str = ""
    label: str = ""  # how tables and figures name it

    @property
    def title(self) -> str:
        return self.label or self.name


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


def register(name: str, factory: Callable | str | None = None, *, needs: Sequence[str] = (), source: str = "",
             label: str = ""):
    """Add a reward to the registry; without `factory`, a decorator of the factory."""
    if factory is None:
        return lambda f: register(name, f, needs=needs, source=source, label=label) and f
    REWARDS[name] = RewardSpec(name, factory, tuple(needs), source, label)
    return REWARDS[name]


for _spec in (
    RewardSpec("hpsv21", "egrpo.rewards.real:hps_v21", ("checkpoint",), HPS_SOURCE, "HPS v2.1"),
    RewardSpec("hpsv20", "egrpo.rewards.real:hps_v20", ("checkpoint",), HPS20_SOURCE, "HPS v2.0"),
    RewardSpec("clip_score", "egrpo.rewards.real:clip_score", ("checkpoint",), CLIP_SOURCE, "CLIP score"),
    RewardSpec("pickscore", "egrpo.rewards.real:pickscore", ("model_dir", "processor_dir"), PICK_SOURCE, "PickScore"),
    RewardSpec("imagereward", "egrpo.rewards.imagereward:imagereward", ("checkpoint", "med_config", "tokenizer_dir"),
               IR_SOURCE, "ImageReward"),
    RewardSpec("world_preference", "egrpo.rewards.world:preference", label="preference score (world)"),
    RewardSpec("world_alignment", "egrpo.rewards.world:alignment", label="alignment score (world)"),
    RewardSpec("world_realism", "egrpo.rewards.world:realism", label="realism score (world)"),
    RewardSpec("world_fidelity", "egrpo.rewards.world:fidelity", ("critic",),
               "the world's critic.pt, written by `egrpo world build` (rule world_build)", "fidelity critic (world)"),
    RewardSpec("brightness", "egrpo.rewards.simple:brightness", label="mean brightness"),
    RewardSpec("channel", "egrpo.rewards.simple:channel", label="colour channel excess"),
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
    import torch

    spec = reward_spec(name, "reward")
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
        raise NonFiniteRewardError(f"reward {name!r} returned non-finite values for samples {bad}")
    return out
