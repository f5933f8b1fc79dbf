"""Evidence that the embedded world means something: base-model attribute accuracy (exact parser,
averaged over the evaluation samples), split by seen / held-out captions, a grid of base samples,
and per setting a table of every method's test scores as mean +- std over training seeds next to
the base model.

    egrpo world evidence [RESULTS_DIR] [--grid docs/world_base_grid.png]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .scorers import correct_attributes
from .shapes import TEST_CAPTIONS


def load_images(folder: Path, n: int, sample: int = 0) -> torch.Tensor:
    from ..evaluate import image_name

    arrs = [np.asarray(Image.open(folder / image_name(k, sample)).convert("RGB")) for k in range(n)]
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float() / 255


def folder_accuracy(folder: Path, prompts: list[str]) -> dict:
    """accuracy() averaged over every evaluation sample the folder holds (sample 0, 1, ...)."""
    from ..evaluate import image_name

    samples = 1
    while (folder / image_name(0, samples)).exists():
        samples += 1
    accs = [accuracy(load_images(folder, len(prompts), j), prompts) for j in range(samples)]
    return {k: float(np.mean([a[k] for a in accs])) for k in accs[0]}


def accuracy(images: torch.Tensor, prompts: list[str]) -> dict:
    ok = correct_attributes(images, prompts)
    held = torch.tensor([TEST_CAPTIONS[k].held_out for k in range(len(prompts))])
    return {"color": float(ok[:, 0].float().mean()), "shape": float(ok[:, 1].float().mean()),
            "position": float(ok[:, 2].float().mean()), "all": float(ok.all(1).float().mean()),
            "all_seen": float(ok[~held].all(1).float().mean()), "all_held_out": float(ok[held].all(1).float().mean()),
            "chance_all": 1 / 72}


def seed_table(res: Path, setting: str, prompts: list[str]) -> str:
    """Markdown: base and each method's main runs, every metric and all-attribute accuracy as
    mean +- std over training seeds."""
    import pandas as pd

    base = pd.read_csv(res / "eval/base.summary.csv").set_index("metric")["mean"]
    metrics = list(base.index)
    acc = lambda folder: folder_accuracy(folder, prompts)["all"]  # noqa: E731
    lines = ["| | seeds | " + " | ".join(metrics) + " | all attributes correct |",
             "|---" * (len(metrics) + 3) + "|",
             "| base model | - | " + " | ".join(f"{base[m]:.4f}" for m in metrics)
             + f" | {acc(res / 'eval/base_images'):.3f} |"]
    for method_dir in sorted((res / "eval" / setting).iterdir()):
        runs = sorted((method_dir / "main").glob("seed*.summary.csv"))
        if not runs:
            continue
        df = pd.concat([pd.read_csv(r).set_index("metric")["mean"] for r in runs], axis=1)
        a = np.array([acc(r.with_name(r.name.replace(".summary.csv", "_images"))) for r in runs])
        cells = [f"{df.loc[m].mean():.4f} ± {df.loc[m].std(ddof=1) if len(runs) > 1 else 0:.4f}" for m in metrics]
        lines.append(f"| {method_dir.name} | {len(runs)} | " + " | ".join(cells)
                     + f" | {a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0:.3f} |")
    return "\n".join(lines)


def report(results: Path = Path("results"), grid: Path | None = None) -> None:
    """Print each model's attribute accuracy and every setting's seed table; save the base grid to `grid`."""
    prompts = [c.text for c in TEST_CAPTIONS]
    res = Path(results)
    rows = {"base": res / "eval/base_images"}
    for run in sorted((res / "eval").glob("*/*/main/seed0_images")):  # every setting's trained methods
        rows[f"{run.parts[-4]}/{run.parts[-3]}"] = run
    for label, folder in rows.items():
        acc = folder_accuracy(folder, prompts)
        print(label, " ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    for setting in sorted(p.name for p in (res / "eval").iterdir() if p.is_dir() and not p.name.endswith("_images")):
        print(f"\n{setting}:\n" + seed_table(res, setting, prompts))
    if grid:
        import torchvision

        torchvision.utils.save_image(load_images(rows["base"], len(prompts)), grid, nrow=12, padding=1)
