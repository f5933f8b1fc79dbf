"""The shapes world's scorers as rewards (egrpo/world/scorers.py has their definitions and roles)."""

from __future__ import annotations

import torch

from . import Reward, require


def preference(options: dict, device: torch.device) -> Reward:
    from ..world.scorers import preference

    return preference


def alignment(options: dict, device: torch.device) -> Reward:
    from ..world.scorers import alignment

    return alignment


def realism(options: dict, device: torch.device) -> Reward:
    from ..world.scorers import realism

    return realism


def fidelity(options: dict, device: torch.device) -> Reward:
    """options.critic: the attribute CNN's weights, written by `egrpo world build`."""
    from ..world.scorers import Fidelity

    return Fidelity.load(require(options, "critic", "world_fidelity"))
