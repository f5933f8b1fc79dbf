"""The shapes world's scorers behind the reward interface (see egrpo/world/scorers.py for roles)."""

from __future__ import annotations

import torch

from . import Reward, register


@register("world_preference")
def _preference(options: dict, device: torch.device) -> Reward:
    from ..world.scorers import preference

    return preference


@register("world_alignment")
def _alignment(options: dict, device: torch.device) -> Reward:
    from ..world.scorers import alignment

    return alignment


@register("world_realism")
def _realism(options: dict, device: torch.device) -> Reward:
    from ..world.scorers import realism

    return realism


@register("world_fidelity")
def _fidelity(options: dict, device: torch.device) -> Reward:
    """options.critic: the attribute CNN's weights, written by `egrpo world build`."""
    from ..errors import ConfigError
    from ..world.scorers import Fidelity

    if "critic" not in options:
        raise ConfigError("rewards.options.world_fidelity.critic: path to the world's critic.pt is required")
    return Fidelity.load(options["critic"])
