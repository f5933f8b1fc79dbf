"""A procedural captioned image distribution: one coloured shape on a dark background.

Captions come from a grammar, "a {color} {shape} at the {top|bottom} {left|right}"; 6 colours x 3
shapes x 4 quadrants = 72 captions. Six colour-shape pairs (24 captions) never appear in training,
so the test set (all 72) measures compositional generalisation. Images are rendered at 4x and
box-filtered down (anti-aliased), deterministically from a seed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

COLORS = {
    "red": (0.90, 0.15, 0.15), "green": (0.15, 0.80, 0.20), "blue": (0.20, 0.35, 0.95),
    "yellow": (0.95, 0.85, 0.15), "purple": (0.65, 0.25, 0.85), "orange": (0.98, 0.55, 0.10),
}
SHAPES = ("circle", "square", "triangle")
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
# colour-shape pairs held out of training (each in all four positions): 24 unseen test captions
HELD_OUT = {("red", "triangle"), ("green", "circle"), ("blue", "square"),
            ("yellow", "triangle"), ("purple", "circle"), ("orange", "square")}
BACKGROUND = (0.06, 0.06, 0.08)
WORDS = tuple(sorted({"a", "at", "the", "top", "bottom", "left", "right", *COLORS, *SHAPES}))


@dataclass(frozen=True)
class Caption:
    color: str
    shape: str
    position: str

    @property
    def text(self) -> str:
        return f"a {self.color} {self.shape} at the {self.position}"

    @property
    def held_out(self) -> bool:
        return (self.color, self.shape) in HELD_OUT


ALL_CAPTIONS = tuple(Caption(c, s, p) for c, s, p in itertools.product(COLORS, SHAPES, POSITIONS))
TRAIN_CAPTIONS = tuple(c for c in ALL_CAPTIONS if not c.held_out)
TEST_CAPTIONS = ALL_CAPTIONS


def parse_caption(text: str) -> Caption:
    """Inverse of Caption.text; raises ValueError for text outside the grammar."""
    words = text.lower().split()
    if len(words) != 7 or words[0] != "a" or words[3] != "at" or words[4] != "the":
        raise ValueError(f"not a caption of the shapes world: {text!r}")
    cap = Caption(words[1], words[2], " ".join(words[5:]))
    if cap.color not in COLORS or cap.shape not in SHAPES or cap.position not in POSITIONS:
        raise ValueError(f"not a caption of the shapes world: {text!r}")
    return cap


def check_captions(prompts) -> None:
    """Every prompt a caption of the world (what its scorers read); ValueError naming the first that is not."""
    for k, text in enumerate(prompts):
        try:
            parse_caption(text)
        except ValueError:
            raise ValueError(f"prompt {k} {text!r} is not a caption of the shapes world ('a <colour> <shape> at "
                             f"the <top|bottom> <left|right>')") from None


def quadrant_center(position: str, size: int) -> tuple[float, float]:
    """(row, col) centre of a quadrant in pixels."""
    v, h = position.split()
    q = size / 4
    return (q if v == "top" else 3 * q, q if h == "left" else 3 * q)


def render(caption: Caption, size: int, rng: np.random.Generator, supersample: int = 4) -> np.ndarray:
    """[3, size, size] float32 in [0, 1]: the shape at its quadrant, +-size/16 jitter, radius 5/32-7/32."""
    s = size * supersample
    cy, cx = quadrant_center(caption.position, size)
    jitter = size / 16
    cy, cx = (cy + rng.uniform(-jitter, jitter)) * supersample, (cx + rng.uniform(-jitter, jitter)) * supersample
    r = rng.uniform(5 / 32, 7 / 32) * s
    yy, xx = np.mgrid[0:s, 0:s] + 0.5
    if caption.shape == "circle":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    elif caption.shape == "square":
        half = r * 0.85
        mask = (np.abs(yy - cy) <= half) & (np.abs(xx - cx) <= half)
    else:  # upward triangle inscribed in the circle of radius r
        top, bottom = cy - r, cy + 0.6 * r
        half_w = (yy - top) / (bottom - top) * r * 0.95
        mask = (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half_w)
    img = np.empty((3, s, s), dtype=np.float32)
    for ch in range(3):
        img[ch] = np.where(mask, COLORS[caption.color][ch], BACKGROUND[ch])
    return img.reshape(3, size, supersample, size, supersample).mean(axis=(2, 4))


def make_dataset(captions: tuple[Caption, ...], n: int, size: int, seed: int) -> tuple[torch.Tensor, list[int]]:
    """n images (cycling through the captions) and their caption indices, deterministic in seed."""
    rng = np.random.default_rng(seed)
    idx = [k % len(captions) for k in range(n)]
    images = np.stack([render(captions[k], size, rng) for k in idx])
    return torch.from_numpy(images), idx


def prompt_sets() -> dict[str, list[str]]:
    """The deterministic train/test prompt sets (test includes the 24 held-out combinations)."""
    return {"train": [c.text for c in TRAIN_CAPTIONS], "test": [c.text for c in TEST_CAPTIONS]}
