"""The paper's figures as PNG and PDF (matplotlib, Agg backend)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .report import METHOD_NAMES  # noqa: E402


def save(fig, stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=150)
    fig.savefig(stem.with_suffix(".pdf"))
    plt.close(fig)


def entropy_figure(stem: Path, *, num_steps: int = 16, shift: float = 3.0, eta: float = 0.7, tau: float = 2.2,
                   max_len: int = 6, reading: str = "entropy_power") -> None:
    """Fig. 1b: entropy (per-dimension entropy power) of a step merged over l steps, per timestep."""
    from .merge import entropy_table, merge_lengths
    from .schedule import shifted_sigmas

    sig = shifted_sigmas(num_steps, shift)
    table = entropy_table(sig, max_len, eta=eta, reading=reading).numpy()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for l in range(max_len):
        ax.plot(range(num_steps), table[:, l], marker="o", ms=3, label=f"merge {l + 1}")
    ax.axhline(tau, color="k", ls="--", lw=1, label=f"tau = {tau}")
    adaptive = merge_lengths(sig, range(num_steps), tau=tau, eta=eta, reading=reading)
    ax.plot(range(num_steps), [table[i, l - 1] for i, l in enumerate(adaptive)], "k*", ms=8, label="adaptive l")
    ax.set(xlabel="timestep k", ylabel="exp(h/d)" if reading == "entropy_power" else "exp(2h/d)",
           title=f"Step entropy, T={num_steps}, shift {shift}, eta {eta}")
    ax.legend(fontsize=7, ncol=2)
    save(fig, stem)


def variance_figure(csv: Path, stem: Path) -> None:
    """Fig. 1a's quantity: reward std over G branches of a one-step SDE at each step."""
    df = pd.read_csv(csv)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for label, grp in df.groupby("merge"):
        ax.plot(grp.step, grp.reward_std, marker="o", label=f"{label} one-step SDE")
    ax.set(xlabel="timestep k of the SDE step", ylabel="reward std over branches", title="Reward spread per step")
    ax.legend()
    save(fig, stem)


def reward_curves(logs: dict[str, Sequence[Path]], reward_key: str, stem: Path, smooth: int = 3) -> None:
    """Fig. 4: training reward per iteration (mean over seeds, band = min..max), and against compute."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for method, paths in logs.items():
        runs = [[json.loads(line) for line in Path(p).read_text().splitlines()] for p in paths]
        n = min(len(r) for r in runs)
        smooth = max(1, min(smooth, n))
        rew = np.array([[row[reward_key] for row in r[:n]] for r in runs])
        passes = np.cumsum([row["passes/sampling"] + row["passes/training"] for row in runs[0][:n]])
        kernel = np.ones(smooth) / smooth
        sm = np.array([np.convolve(r, kernel, mode="valid") for r in rew])
        x = np.arange(sm.shape[1]) + smooth - 1
        for ax, xs in ((axes[0], x), (axes[1], passes[smooth - 1:])):
            ax.plot(xs, sm.mean(0), label=METHOD_NAMES.get(method, method))
            ax.fill_between(xs, sm.min(0), sm.max(0), alpha=0.2)
    axes[0].set(xlabel="iteration", ylabel=reward_key, title="Training reward (seed band)")
    axes[1].set(xlabel="transformer passes", ylabel=reward_key, title="Training reward vs compute")
    axes[0].legend()
    save(fig, stem)


def qualitative_grid(columns: dict[str, Path], prompts: Sequence[str], indices: Sequence[int], stem: Path) -> None:
    """Figs. 5-7: the same prompts and seeds across methods (one column per method)."""
    from PIL import Image

    fig, axes = plt.subplots(len(indices), len(columns), figsize=(1.6 * len(columns), 1.6 * len(indices)),
                             squeeze=False)
    for c, (label, folder) in enumerate(columns.items()):
        for r, k in enumerate(indices):
            ax = axes[r][c]
            ax.imshow(Image.open(Path(folder) / f"{k:05d}.png"))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(label, fontsize=8)
            if c == 0:
                ax.set_ylabel(prompts[k][:40], fontsize=6)
    save(fig, stem)


def tau_figure(table_csv: Path, metrics: Sequence[str], stem: Path) -> None:
    """Table 4 as a plot: each metric against tau, with 95% CI over seeds."""
    df = pd.read_csv(table_csv)
    tau = df["row"].str.extract(r"tau = ([0-9.]+)")[0].astype(float)
    tau = tau.fillna(2.2)  # the main E-GRPO row
    df = df.assign(tau=tau).sort_values("tau")
    fig, axes = plt.subplots(1, len(metrics), figsize=(3 * len(metrics), 3))
    for ax, m in zip(np.atleast_1d(axes), metrics):
        ax.errorbar(df.tau, df[m], yerr=df[f"{m}_ci95"], marker="o", capsize=3)
        ax.set(xlabel="tau", title=m)
    save(fig, stem)
