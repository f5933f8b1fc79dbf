"""The one image converter every real scorer uses: [B, 3, H, W] floats in [0, 1] -> PIL images."""

from __future__ import annotations

import torch


def to_pil(images: torch.Tensor) -> list:
    from PIL import Image

    arr = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def require(options: dict, key: str, reward: str, what: str) -> str:
    """A weight path from the options; a clear error naming the config key and where to get it."""
    from pathlib import Path

    from ..errors import WeightsMissingError

    path = options.get(key)
    if not path:
        raise WeightsMissingError(f"metrics.<label>.options.{key} is required for reward {reward!r}: {what}")
    if not Path(path).exists():
        raise WeightsMissingError(f"{reward}: {key} = {path} does not exist. Expected {what}")
    return str(path)
