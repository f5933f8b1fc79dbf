"""What every real scorer shares: the image converter ([B, 3, H, W] floats in [0, 1] -> PIL images)
and the compute precision of the reward model."""

from __future__ import annotations

import torch


def to_pil(images: torch.Tensor) -> list:
    from PIL import Image

    arr = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def reward_dtype(options: dict, device: torch.device) -> torch.dtype:
    """options.precision: auto (bf16 on a GPU: a ViT-H reward model is 3.7 GB in fp32 on every rank),
    fp32 or bf16."""
    from ..errors import ConfigError

    precision = options.get("precision", "auto")
    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"rewards.options.<reward>.precision: one of auto, fp32, bf16, got {precision!r}")
    return torch.bfloat16 if precision == "bf16" or (precision == "auto" and device.type == "cuda") else torch.float32
