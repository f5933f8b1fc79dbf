"""Unpack the rule and call egrpo.figures (the logic lives in the library)."""
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from egrpo import figures  # noqa: E402
from egrpo.report import METHOD_NAMES  # noqa: E402

cfg, out = snakemake.config, Path("results/figures")
train = snakemake.params.training
egrpo_m = train.get("methods", {}).get("egrpo", {}).get("method", {})
figures.entropy_figure(out / "fig1b_entropy", num_steps=egrpo_m.get("num_steps", 16), tau=egrpo_m.get("tau", 2.2),
                       eta=egrpo_m.get("eta", 0.7))
figures.variance_figure(Path(snakemake.input.variance), out / "fig1a_variance")

runs = [tuple(r) for r in snakemake.params.runs]
logs = dict(zip(runs, snakemake.input.logs))
setting = next(iter(cfg["settings"]))
first_reward = cfg["settings"][setting]["names"][0]
curves = {m: [logs[(s, m2, v, seed)] for (s, m2, v, seed) in runs if s == setting and m2 == m and v == "main"]
          for m in cfg["methods"]}
figures.reward_curves(curves, f"reward/{first_reward}/mean", out / "fig4_reward_curves")

qdir = Path(snakemake.input.qualitative)
prompts = Path(snakemake.input.qualitative_prompts).read_text().splitlines()
columns = {"Base model": qdir / "base"}
for s in cfg["settings"]:
    for m in cfg["methods"]:
        columns[f"{METHOD_NAMES[m]} ({s})"] = qdir / s / m
figures.qualitative_grid(columns, prompts, range(len(prompts)), out / "fig5_qualitative")
figures.tau_figure(Path(snakemake.input.tau), list(cfg["metrics"]), out / "tau_ablation")
