"""The paper's figures as PNG and PDF (matplotlib, Agg backend), labelled in words."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pydantic import Field  # noqa: E402

from .config import Strict  # noqa: E402
from .methods import display_name  # noqa: E402
from .plans import EGRPOMethod  # noqa: E402


class EntropySpec(Strict):
    """Fig. 1b's data (`egrpo entropy`): the per-step entropy of merging 1..max_len steps under an
    E-GRPO schedule, noise level, threshold and reading."""

    method: EGRPOMethod = Field(default_factory=EGRPOMethod, description="E-GRPO's schedule, eta, tau and reading")
    max_len: int = Field(6, ge=1, description="longest merge tabulated")


def entropy_frame(spec: EntropySpec) -> pd.DataFrame:
    """Per step: sigma, the entropy of a merge of each length, and the adaptive merge length."""
    from .merge import entropy_table, merge_lengths
    from .schedule import shifted_sigmas

    m, t = spec.method, spec.method.num_steps
    sigmas = shifted_sigmas(t, m.shift)
    table = entropy_table(sigmas, spec.max_len, eta=m.eta, reading=m.reading)
    df = pd.DataFrame(table.numpy(), columns=[f"l={l}" for l in range(1, spec.max_len + 1)])
    df.insert(0, "sigma", sigmas[:-1].numpy())
    df.insert(0, "step", range(t))
    df["adaptive_l"] = merge_lengths(sigmas, range(t - 1), tau=m.tau, eta=m.eta, reading=m.reading) + [None]
    return df


def wrap(label: str, width: int = 38) -> str:
    """An axis label on lines of at most `width` characters (a long one would run past the figure)."""
    return "\n".join(textwrap.wrap(label, width))


def save(fig, stem: Path) -> None:
    """PNG and PDF, the canvas grown to every label (bbox_inches='tight': nothing clipped at its edge)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=150, bbox_inches="tight", pad_inches=0.1)
    fig.savefig(stem.with_suffix(".pdf"), bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)


def entropy_figure(stem: Path, spec: EntropySpec) -> None:
    """Fig. 1b: entropy of a step merged over l steps, per timestep, under E-GRPO's schedule and
    reading, with tau and the adaptive choice."""
    from .merge import entropy_table
    from .plans import EGRPOPlan

    method, max_len = spec.method, spec.max_len
    plan = EGRPOPlan(method.model_copy(update={"active": "all", "fixed_merge": None}))
    sig, t = plan.sigmas, method.num_steps
    table = entropy_table(sig, max_len, eta=method.eta, reading=method.reading).numpy()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for l in range(max_len):
        ax.plot(range(t), table[:, l], marker="o", ms=3, label=f"{l + 1} merged step{'s' if l else ''}")
    ax.axhline(method.tau, color="k", ls="--", lw=1, label=f"threshold tau = {method.tau:g}")
    steps, lengths = plan.active_steps(), plan.merge_lengths()
    ax.plot(steps, [table[i, l - 1] for i, l in zip(steps, lengths)], "k*", ms=8, label="adaptive merge length")
    scale = "exp(h/d)" if method.reading == "entropy_power" else "exp(2h/d)"
    ax.set(xlabel="denoising step (0 = pure noise)", ylabel=f"entropy per dimension, {scale}",
           title=f"Step entropy: {t} steps, shift {method.shift:g}, noise level {method.eta:g}")
    ax.legend(fontsize=7, ncol=2)
    save(fig, stem)


def variance_figure(csv: Path, stem: Path, reward: str) -> None:
    """Fig. 1a's quantity: reward std over G branches of a one-step SDE at each step."""
    df = pd.read_csv(csv)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for label, grp in df.groupby("merge"):
        ax.plot(grp.step, grp.reward_std, marker="o", label=f"{label} one-step SDE")
    ax.set(xlabel="denoising step of the SDE branch (0 = pure noise)", ylabel=wrap(f"std of {reward} over the branches"),
           title="Reward spread from one stochastic step")
    ax.legend()
    save(fig, stem)


def _trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` values at each position (fewer at the start): x stays the iteration."""
    return np.array([values[max(0, k - window + 1):k + 1].mean() for k in range(len(values))])


def release_curve(method) -> str:
    """The training reward a method's release logs, as its plan declares (`logged_reward`): the anchor's
    ODE image (the probe: E-GRPO, GranularGRPO), else the mean over the group's samples (the others;
    TempFlow-GRPO too, although its branches leave an anchor)."""
    from .methods import build_plan

    return getattr(build_plan(method), "logged_reward", "reward")


def reward_curves(logs: dict[str, Sequence[Path]], methods: dict, reward: str, reward_label: str, stem: Path,
                  budget: float | None = None, smooth: int = 3) -> None:
    """Fig. 4: (left) the training reward each method's release logs (`methods`: name -> its method
    config), per iteration: E-GRPO and GranularGRPO the reward of the anchor's ODE image (probe), the
    others the mean over their samples;
    (right) every method's ODE-probe reward against the transformer passes spent, the compute-matched
    comparison of Table 1 at `budget`. Lines: mean over seeds (trailing mean of `smooth` iterations);
    bands: min to max over seeds."""
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.8))
    for method, paths in logs.items():
        runs = [[json.loads(line) for line in Path(p).read_text().splitlines()] for p in paths]
        n = min(len(r) for r in runs)
        own = release_curve(methods[method])
        curve = np.array([_trailing_mean(np.array([row[f"{own}/{reward}/mean"] for row in r[:n]]), smooth) for r in runs])
        it = np.arange(n)
        line, = axes[0].plot(it, curve.mean(0), label=display_name(method))
        axes[0].fill_between(it, curve.min(0), curve.max(0), alpha=0.2, color=line.get_color())
        if all(f"probe/{reward}/mean" in r[0] for r in runs):
            probe = np.array([_trailing_mean(np.array([row[f"probe/{reward}/mean"] for row in r[:n]]), smooth)
                              for r in runs])
            spent = np.array([[row["passes/sampling"] + row["passes/training"] for row in r[:n]] for r in runs]).mean(0)
            before = np.concatenate([[0.0], np.cumsum(spent)[:-1]])
            axes[1].plot(before, probe.mean(0), color=line.get_color(), label=display_name(method))
            axes[1].fill_between(before, probe.min(0), probe.max(0), alpha=0.2, color=line.get_color())
    axes[0].set(xlabel="training iteration", ylabel=wrap(f"training reward: {reward_label}"),
                title="As each release logs it (E-GRPO, GranularGRPO: anchor image;\nothers: mean over samples)")
    axes[1].set(xlabel="transformer passes spent (sampling + training)",
                ylabel=wrap(f"{reward_label} of the policy's ODE sample"), title="Against compute (same quantity for all)")
    if budget:
        axes[1].axvline(budget, color="k", ls="--", lw=1, label="equal-compute budget (Table 1)")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    seeds = sorted({len(paths) for paths in logs.values()})
    fig.text(0.5, 0, band_note(seeds, smooth), ha="center", va="top", fontsize=8)
    save(fig, stem)


def band_note(seeds: Sequence[int], smooth: int) -> str:
    """What Fig. 4's lines and bands are (`seeds`: the methods' seed counts)."""
    n = "/".join(map(str, seeds))
    band = "band: min to max over the seeds" if max(seeds) > 1 else "no band: one seed"
    return (f"line: mean over {n} training seed{'s' if n != '1' else ''} of the trailing mean of {smooth} "
            f"iterations; {band}")


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


def ablation_figure(table_csv: Path, metrics: Sequence[str], stem: Path, xlabel: str) -> None:
    """An ablation table (e.g. Table 4) as a plot: each metric against the varied value, with the 95%
    intervals; the x-values are the table's own (`x` column)."""
    df = pd.read_csv(table_csv)
    x = pd.to_numeric(df["x"], errors="coerce")
    df = df.assign(x=x).dropna(subset=["x"]).sort_values("x")
    fig, axes = plt.subplots(1, len(metrics), figsize=(3 * len(metrics), 3))
    for ax, m in zip(np.atleast_1d(axes), metrics):
        ax.errorbar(df.x, df[m], yerr=df[f"{m}_ci95"], marker="o", capsize=3)
        ax.set(xlabel=xlabel, title=m)
    save(fig, stem)
