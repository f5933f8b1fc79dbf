"""Unpack the rule and call egrpo.figures (the logic lives in the library)."""
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

import numpy as np  # noqa: E402

from egrpo import figures  # noqa: E402
from egrpo import determinism  # noqa: E402
from egrpo.experiment import MAIN, Experiment  # noqa: E402
from egrpo.methods import display_name  # noqa: E402
from egrpo.report import Compute  # noqa: E402
from egrpo.rewards import reward_spec  # noqa: E402

exp = Experiment.load(snakemake.config)
determinism.apply(exp.determinism)  # as every job: before its first tensor operation
out = {Path(p).stem: Path(p).with_suffix("") for p in snakemake.output.figures}

if exp.merge_method:  # Figs. 1a-1b: the merge rule of its main run
    figures.entropy_figure(out["fig1b_entropy"], figures.EntropySpec(method=exp.main_config(exp.merge_method).method))
    variance_reward = exp.variance_spec().metric.reward
    figures.variance_figure(Path(snakemake.input.variance), out["fig1a_variance"], reward_spec(variance_reward).title)

# Fig. 4 on the first setting: each release's training-reward curve, and the probe against compute
logs = dict(zip(exp.runs, snakemake.input.logs))
setting = next(iter(exp.settings))
reward = exp.settings[setting].names[0]
curves = {m: [logs[r] for r in exp.runs if (r.setting, r.method, r.variant) == (setting, m, MAIN)] for m in exp.methods}
runs_compute = {m: [Compute.from_log(p, reward) for p in paths] for m, paths in curves.items()}
budget = min(np.mean([c.passes for c in cs]) for cs in runs_compute.values())
methods = {m: exp.run_config(setting, m).method for m in exp.methods}
figures.reward_curves(curves, methods, reward, reward_spec(reward).title, out["fig4_reward_curves"], budget=budget)

qdir = Path(snakemake.input.qualitative)
prompts = Path(snakemake.input.qualitative_prompts).read_text().splitlines()
columns = {display_name("base"): qdir / "base"}
for s in exp.settings:
    for m in exp.methods:
        columns[f"{display_name(m)} ({s})"] = qdir / s / m
figures.qualitative_grid(columns, prompts, range(len(prompts)), out["fig5_qualitative"])
tables = {Path(p).stem: Path(p) for p in snakemake.input.tables}
for method, axis in exp.tables:  # an ablation table drawn as a plot (Table 4's tau)
    if axis.figure:
        figures.ablation_figure(tables[axis.stem], list(exp.metrics), out[axis.figure], axis.xlabel)
