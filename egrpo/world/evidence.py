"""Evidence that the embedded world means something: base-model attribute accuracy (exact parser),
split by seen / held-out captions, and a grid of base samples.

    python -m egrpo.world.evidence [RESULTS_DIR] [--grid docs/world_base_grid.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .scorers import correct_attributes
from .shapes import TEST_CAPTIONS


def load_images(folder: Path, n: int) -> torch.Tensor:
    arrs = [np.asarray(Image.open(folder / f"{k:05d}.png").convert("RGB")) for k in range(n)]
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float() / 255


def accuracy(images: torch.Tensor, prompts: list[str]) -> dict:
    ok = correct_attributes(images, prompts)
    held = torch.tensor([TEST_CAPTIONS[k].held_out for k in range(len(prompts))])
    return {"color": float(ok[:, 0].float().mean()), "shape": float(ok[:, 1].float().mean()),
            "position": float(ok[:, 2].float().mean()), "all": float(ok.all(1).float().mean()),
            "all_seen": float(ok[~held].all(1).float().mean()), "all_held_out": float(ok[held].all(1).float().mean()),
            "chance_all": 1 / 72}


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("results", nargs="?", default="results")
    p.add_argument("--grid", default=None)
    args = p.parse_args()
    prompts = [c.text for c in TEST_CAPTIONS]
    res = Path(args.results)
    rows = {"base": res / "eval/base_images"}
    for run in sorted((res / "eval/hps").glob("*/main/seed0_images")):
        rows[run.parts[-3]] = run
    for label, folder in rows.items():
        acc = accuracy(load_images(folder, len(prompts)), prompts)
        print(label, " ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    if args.grid:
        import torchvision

        torchvision.utils.save_image(load_images(rows["base"], len(prompts)), args.grid, nrow=12, padding=1)


if __name__ == "__main__":
    main()
