"""The shapes world's four scorers, in the roles of the paper's metrics.

| scorer      | role (paper metric)          | what it measures                                        |
|-------------|------------------------------|---------------------------------------------------------|
| preference  | HPS v2.1 (training reward)   | how vivid, contrasted and crisp the object is, and whether its colour and shape are the prompt's |
| alignment   | CLIP score (training reward) | soft match of colour, shape and position to the prompt  |
| fidelity    | PickScore (held out)         | a CNN trained on ground-truth renders: p(prompt's attributes) |
| realism     | ImageReward (held out)       | closeness to the data distribution (one regular object of the data's size on a flat background) x prompt match |

preference and alignment are exact measures of the image; maximising preference alone can be
hacked (oversized, oversaturated or blurry-edged blobs), which the held-out fidelity and realism
scores expose. All return a [B] tensor, higher is better, in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .. import progress
from .shapes import COLORS, POSITIONS, SHAPES, parse_caption, quadrant_center

FG_THRESHOLD = 0.3  # max-channel brightness separating the object from the dark background
# bounding-box fill ratio of each shape as rendered at 32 px (measured: 0.80, 1.00, 0.57)
FILL = {"circle": 0.80, "square": 1.0, "triangle": 0.57}
AREA_RANGE = (0.035, 0.165)  # object area / image area over the dataset (measured 0.038..0.158)
BG_STD_MAX = 0.045  # background flatness of the data (anti-aliased edges; measured max 0.041)


@dataclass
class Measurements:
    """Per-image analytic measurements [B] (colour [B, 3], centroid [B, 2] in pixels)."""

    has_object: torch.Tensor
    color: torch.Tensor
    fill: torch.Tensor
    centroid: torch.Tensor
    area: torch.Tensor
    saturation: torch.Tensor
    contrast: torch.Tensor
    bg_std: torch.Tensor
    crisp: torch.Tensor


def measure(images: torch.Tensor) -> Measurements:
    """Foreground mask (max channel > threshold) and the statistics every scorer is built from."""
    x = images.float().clamp(0, 1)
    b, _, h, w = x.shape
    bright = x.max(dim=1).values  # [B, H, W]
    fg = bright > FG_THRESHOLD
    n_fg = fg.sum(dim=(1, 2)).float()
    has = n_fg >= 4
    denom = n_fg.clamp(min=1)
    color = (x * fg[:, None]).sum(dim=(2, 3)) / denom[:, None]
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32) + 0.5, torch.arange(w, dtype=torch.float32) + 0.5,
                            indexing="ij")
    cy = (fg * yy).sum(dim=(1, 2)) / denom
    cx = (fg * xx).sum(dim=(1, 2)) / denom
    rows, cols = fg.any(dim=2).float(), fg.any(dim=1).float()
    box = rows.sum(1).clamp(min=1) * cols.sum(1).clamp(min=1)
    sat = ((x.max(1).values - x.min(1).values) * fg).sum(dim=(1, 2)) / denom
    bg = ~fg
    n_bg = bg.sum(dim=(1, 2)).clamp(min=1)
    bg_mean = (bright * bg).sum(dim=(1, 2)) / n_bg
    bg_std = (((bright - bg_mean[:, None, None]) ** 2) * bg).sum(dim=(1, 2)).div(n_bg).sqrt()
    fg_mean = (bright * fg).sum(dim=(1, 2)) / denom
    mid = ((bright > 0.15) & (bright < 0.6)).float().mean(dim=(1, 2))
    return Measurements(has, color, n_fg / box, torch.stack([cy, cx], 1), n_fg / (h * w), sat,
                        fg_mean - bg_mean, bg_std, 1 - mid)


def _softmax_pick(neg_dist: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return neg_dist.softmax(dim=1).gather(1, index[:, None])[:, 0]


def attribute_distances(m: Measurements, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Squared distance of each image's colour [B, 6], fill ratio [B, 3] and centroid [B, 4] to every
    colour, shape and quadrant of the world."""
    palette = torch.tensor(list(COLORS.values()))
    fills = torch.tensor([FILL[s] for s in SHAPES])
    centers = torch.tensor([quadrant_center(p, size) for p in POSITIONS])
    return (((m.color[:, None] - palette[None]) ** 2).sum(-1), (m.fill[:, None] - fills[None]) ** 2,
            ((m.centroid[:, None] - centers[None]) ** 2).sum(-1))


def attribute_probs(m: Measurements, prompts: Sequence[str], size: int) -> torch.Tensor:
    """[B, 3] soft probability that the image shows the prompt's colour / shape / position (softmax
    over the world's values of a negative squared distance)."""
    d_color, d_shape, d_pos = attribute_distances(m, size)
    c_idx, s_idx, p_idx = attribute_targets(prompts)
    p_color = _softmax_pick(-d_color / (2 * 0.1**2), c_idx)
    p_shape = _softmax_pick(-d_shape / (2 * 0.08**2), s_idx)
    p_pos = _softmax_pick(-d_pos / (2 * (size / 8) ** 2), p_idx)
    return torch.stack([p_color, p_shape, p_pos], 1) * m.has_object[:, None]


def alignment(images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """CLIP's role: mean over colour, shape and position of the soft match to the prompt."""
    return attribute_probs(measure(images), prompts, images.shape[-1]).mean(1)


def preference(images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """HPS's role: mostly aesthetics (vivid colour, strong contrast, a clean background, crisp
    edges), partly prompt match (colour and shape): 0.6 aesthetic + 0.4 match."""
    m = measure(images)
    clean = (1 - 10 * m.bg_std).clamp(0, 1)
    aesthetic = (m.saturation.clamp(0, 1) + m.contrast.clamp(0, 1) + clean + m.crisp) / 4
    match = attribute_probs(m, prompts, images.shape[-1])[:, :2].mean(1)
    return torch.where(m.has_object, 0.6 * aesthetic + 0.4 * match, torch.zeros_like(aesthetic))


def realism(images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """ImageReward's role: how much the image looks like a sample of the world (object area within
    the data's range, a regular shape, a background as flat as the data's; product of three terms)
    times how well it matches the prompt (mean soft match)."""
    m = measure(images)
    lo, hi = AREA_RANGE
    area_term = torch.exp(-(((lo - m.area).clamp(min=0) + (m.area - hi).clamp(min=0)) / 0.03) ** 2)
    fills = torch.tensor(list(FILL.values()))
    shape_term = torch.exp(-((m.fill[:, None] - fills[None]).abs().min(1).values / 0.1) ** 2)
    bg_term = torch.exp(-((m.bg_std - BG_STD_MAX).clamp(min=0) / 0.05) ** 2)
    score = area_term * shape_term * bg_term * attribute_probs(m, prompts, images.shape[-1]).mean(1)
    return torch.where(m.has_object, score, torch.zeros_like(score))


class AttributeNet(torch.nn.Module):
    """A small CNN with one head per attribute (colour, shape, position), trained on renders."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.GELU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(width, 2 * width, 3, padding=1), torch.nn.GELU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(2 * width, 2 * width, 3, padding=1), torch.nn.GELU(),
            torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(),
        )
        self.heads = torch.nn.ModuleList(torch.nn.Linear(8 * width, n) for n in (len(COLORS), len(SHAPES), len(POSITIONS)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        z = self.body(x * 2 - 1)
        return [head(z) for head in self.heads]


def attribute_targets(prompts: Sequence[str]) -> list[torch.Tensor]:
    caps = [parse_caption(p) for p in prompts]
    return [torch.tensor([list(COLORS).index(c.color) for c in caps]),
            torch.tensor([SHAPES.index(c.shape) for c in caps]),
            torch.tensor([POSITIONS.index(c.position) for c in caps])]


def train_attribute_net(images: torch.Tensor, prompts: Sequence[str], *, steps: int, seed: int = 0,
                        noise: float = 0.08) -> AttributeNet:
    """Fit the fidelity critic on ground-truth renders, with pixel noise and blur augmentation so it
    is not fooled by the base model's softer images; deterministic in seed."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = AttributeNet()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    targets = attribute_targets(prompts)
    bar = progress.Progress("world build, fidelity critic", steps, unit="step", lines=20)
    for k in range(steps):
        idx = torch.randint(len(images), (64,), generator=g)
        x = images[idx]
        if torch.rand((), generator=g) < 0.5:
            x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        x = (x + noise * torch.randn(x.shape, generator=g)).clamp(0, 1)
        loss = sum(F.cross_entropy(o, t[idx]) for o, t in zip(net(x), targets))
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.reach(k + 1, loss=float(loss.detach()))
    return net.eval()


class Fidelity:
    """Held-out learned critic: mean over attributes of the CNN's probability of the prompt's value."""

    def __init__(self, net: AttributeNet):
        self.net = net.eval().requires_grad_(False)

    @classmethod
    def load(cls, path: str | Path) -> "Fidelity":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"fidelity critic weights {path} missing: build the world first "
                                    "(snakemake results/world/... or `egrpo world build`)")
        net = AttributeNet()
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return cls(net)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        logits = self.net(images.float().cpu())
        probs = [o.softmax(-1).gather(1, t[:, None])[:, 0] for o, t in zip(logits, attribute_targets(prompts))]
        return torch.stack(probs).mean(0)


def correct_attributes(images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """[B, 3] bool: is the colour / shape / position read off the image (nearest value) the prompt's?"""
    m = measure(images)
    nearest = [d.argmin(1) for d in attribute_distances(m, images.shape[-1])]
    got = torch.stack([n == t for n, t in zip(nearest, attribute_targets(prompts))], 1)
    return got & m.has_object[:, None]
