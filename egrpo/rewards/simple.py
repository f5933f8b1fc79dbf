"""Analytic rewards of image statistics (no weights): for smoke runs and tests of the trainer."""

from __future__ import annotations

import torch

from . import Reward


def brightness(options: dict, device: torch.device) -> Reward:
    """Mean pixel intensity: a trivially checkable reward for tests and smoke runs."""
    return lambda images, prompts: images.float().mean(dim=(1, 2, 3))


def channel(options: dict, device: torch.device) -> Reward:
    """Mean of one colour channel minus the mean of the other two (options: channel = 0/1/2)."""
    c = int(options.get("channel", 0))

    def fn(images, prompts):
        others = [k for k in range(3) if k != c]
        return images[:, c].mean(dim=(1, 2)) - images[:, others].mean(dim=(1, 2, 3))

    return fn
