"""The figures: every label inside the saved image (a long one wrapped, the canvas grown to the rest), and
Fig. 4 saying what its lines and bands are."""

import json

import numpy as np
import pandas as pd
from PIL import Image

from conftest import tiny_run_config
from egrpo import figures
from egrpo.config import resolve


def _saved(monkeypatch):
    """Record each figure `figures.save` writes, with its tight bounding box (every artist) in pixels."""
    seen = []
    original = figures.save

    def save(fig, stem):
        fig.tight_layout()
        box = fig.get_tightbbox(fig.canvas.get_renderer())
        seen.append((fig, box.width * 150, box.height * 150, [t.get_text() for t in fig.texts]))
        original(fig, stem)

    monkeypatch.setattr(figures, "save", save)
    return seen


def _holds_every_artist(stem, width, height):
    w, h = Image.open(stem.with_suffix(".png")).size
    assert w >= width - 2 and h >= height - 2, (stem, (w, h), (width, height))  # nothing cut at an edge


def test_fig1a_wraps_a_long_reward_name_and_keeps_every_label(tmp_path, monkeypatch):
    seen = _saved(monkeypatch)
    csv = tmp_path / "variance.csv"
    pd.DataFrame({"step": [0, 1, 0, 1], "merge": ["merged"] * 2 + ["unmerged"] * 2,
                  "reward_std": [0.1, 0.05, 0.08, 0.04]}).to_csv(csv, index=False)
    figures.variance_figure(csv, tmp_path / "fig1a", "alignment score (world) of a very long reward name")
    (fig, width, height, _), = seen
    assert "\n" in fig.axes[0].get_ylabel()
    _holds_every_artist(tmp_path / "fig1a", width, height)
    # a label past the figure's edge (tight_layout leaves it there): the saved canvas grows to hold it
    fig, ax = figures.plt.subplots(figsize=(3, 2))
    fig.text(1.02, 0.5, "a note right of the axes", ha="left")
    figures.save(fig, tmp_path / "edge")
    fig, width, height, _ = seen[-1]
    assert width > fig.get_figwidth() * 150
    _holds_every_artist(tmp_path / "edge", width, height)


def test_fig4_keeps_both_panels_labels_and_says_what_its_band_is(tmp_path, monkeypatch):
    seen = _saved(monkeypatch)
    rng = np.random.default_rng(0)
    logs, methods = {}, {}
    for m in ("egrpo", "dancegrpo"):
        methods[m] = resolve(tiny_run_config(tmp_path, m), m).method
        logs[m] = []
        for seed in (0, 1):
            path = tmp_path / f"{m}{seed}.jsonl"
            path.write_text("".join(json.dumps({"reward/r/mean": v, "probe/r/mean": v, "passes/sampling": 100,
                                                "passes/training": 10}) + "\n" for v in rng.random(4)))
            logs[m].append(path)
    figures.reward_curves(logs, methods, "r", "preference score (world) of a long reward name", tmp_path / "fig4",
                          budget=300)
    (fig, width, height, texts), = seen
    assert texts == ["line: mean over 2 training seeds of the trailing mean of 3 iterations; band: min to max over "
                     "the seeds"]
    _holds_every_artist(tmp_path / "fig4", width, height)
    assert figures.band_note([1], 3).endswith("no band: one seed")
