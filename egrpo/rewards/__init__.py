"""Reward registry: one signature for every scorer, training and evaluation alike.

A reward is built by a factory `factory(options: dict, device) -> Reward`, and a Reward is called as
`reward(images [B, 3, H, W] float in [0, 1], prompts: list[str]) -> Tensor [B]` (fp32, on CPU).
Heavy imports stay inside factories. A scorer that fails raises; it never returns a default.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch

from ..errors import NonFiniteRewardError


class Reward(Protocol):
    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor: ...


Factory = Callable[[dict, torch.device], Reward]
REWARDS: dict[str, Factory] = {}


def register(name: str):
    """Decorator adding a reward factory to the registry under `name`."""

    def deco(factory: Factory) -> Factory:
        REWARDS[name] = factory
        return factory

    return deco


def build_reward(name: str, options: dict | None = None, device: str | torch.device = "cpu") -> Reward:
    _load_builtin()
    if name not in REWARDS:
        raise KeyError(f"unknown reward {name!r}; registered: {sorted(REWARDS)}")
    return REWARDS[name](dict(options or {}), torch.device(device))


def score(reward: Reward, name: str, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """Call a reward and check its output: shape [B], finite. Raises loudly otherwise."""
    out = reward(images, list(prompts))
    out = torch.as_tensor(out, dtype=torch.float32).detach().cpu()
    if out.shape != (images.shape[0],):
        raise ValueError(f"reward {name!r} returned shape {tuple(out.shape)}, expected ({images.shape[0]},)")
    if not torch.isfinite(out).all():
        bad = [k for k in range(len(out)) if not torch.isfinite(out[k])]
        raise NonFiniteRewardError(f"reward {name!r} returned non-finite values for samples {bad}")
    return out


def _load_builtin() -> None:
    from . import imagereward, real, simple, world  # noqa: F401  (the paper's metrics, analytic and world rewards)


@register("brightness")
def _brightness(options: dict, device: torch.device) -> Reward:
    """Mean pixel intensity: a trivially checkable reward for tests and smoke runs."""
    return lambda images, prompts: images.float().mean(dim=(1, 2, 3))
