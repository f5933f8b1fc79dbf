"""What every real scorer shares: the image converter ([B, 3, H, W] floats in [0, 1] -> PIL images)
and the precision a reward model runs at (the dtype of its weights and of its computation)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

# fp32: fp32 weights and arithmetic (the releases' evaluation scripts); amp: fp32 weights under fp16
# autocast on a GPU (the releases' training rewards: torch.amp.autocast('cuda'), which leaves CPU
# tensors in fp32); bf16: bf16 weights and arithmetic (half the memory, 3 fewer mantissa bits than fp16)
PRECISIONS = ("fp32", "amp", "bf16")


def to_pil(images: torch.Tensor) -> list:
    from PIL import Image

    arr = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


@dataclass(frozen=True)
class Precision:
    """A reward model's precision on a device: the dtype its weights are stored in and the autocast
    dtype its forward runs under (None: the weights' own)."""

    name: str
    weights: torch.dtype
    autocast: torch.dtype | None
    device_type: str

    def context(self):
        """The context the scorer computes in (the whole score, the final image-text product included)."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast)

    @property
    def compute(self) -> torch.dtype:
        """The dtype of the matrix products."""
        return self.autocast or self.weights


def reward_precision(options: dict, device: torch.device) -> Precision:
    """options.precision (fp32 when unset): a run sets it from rewards.precision (amp by default),
    evaluation from eval.precision (fp32)."""
    from ..errors import ConfigError

    name = options.get("precision", "fp32")
    if name not in PRECISIONS:
        raise ConfigError(f"reward precision: one of {', '.join(PRECISIONS)}, got {name!r} (rewards.precision of a run, "
                          "eval.precision of the evaluation)")
    if name == "bf16":
        return Precision(name, torch.bfloat16, None, device.type)
    if name == "amp" and device.type == "cuda":
        return Precision(name, torch.float32, torch.float16, device.type)
    return Precision(name, torch.float32, None, device.type)
