"""How many training seeds an experiment needs, projected from the variance it measured.

For every paired claim of the tables (egrpo.report), from its differences d [seeds, prompts] and
egrpo.stats.projected_half_width: the seeds at which a gain over the base model would be `ratio`
times its interval's half-width, and the seeds at which a difference between two runs would be
resolved or bounded below `fraction` of the mean gain. The budget follows from the variance, not
from which method wins.

    egrpo power --configfile config/config.yaml config/world_study.yaml [--workdir DIR] [--prompts N ...]

With --prompts, also on larger test sets drawn like the measured one (the per-seed and per-prompt
variance components carry over): whether a richer prompt set would meet a bar that seeds alone cannot.
Each claim also gets its verdict (decided with its table's claims), the chance that a rerun reaches the
same verdict and the seeds at which that chance would be 90% (egrpo.verdicts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .experiment import BASE_EVAL_CSV, EVAL_CSV, RUN_LOG, Experiment
from .report import Tables
from .stats import projected_half_width, seeds_for
from .verdicts import TARGET, same_verdict, seeds_to_replicate

LIMIT = 1024


def _seeds(n: int | None) -> str:
    return f"> {LIMIT}" if n is None else str(n)


def power_table(tables: Tables, *, ratio: float = 5.0, fraction: float = 0.25,
                prompts: Sequence[int] = ()) -> str:
    """Markdown: each paired claim with Δ, its half-width now and the seeds its bar needs, on the
    measured test prompts and on each count in `prompts` (a larger test set drawn like this one); then
    the chance that a rerun reaches its verdict (decided with its table's claims, egrpo.verdicts) and
    the seeds at which that chance would be 90%, on the measured test prompts."""
    tables.build_all()
    paired = [(c.table, c.kind, c.comparison) for c in tables.claims if c.comparison.differences is not None]
    gains = [c for _, kind, c in paired if kind == "gain"]
    bound = fraction * float(np.mean([c.delta for c in gains]))
    counts = [None, *prompts]  # None: the measured test set
    n_p = paired[0][2].differences.shape[1]
    lines = [f"| table | claim | Δ | half-width ({len(tables.exp.seeds)} seeds) | with {LIMIT} seeds | bar | "
             + " | ".join(f"seeds for the bar ({n or n_p} prompts)" for n in counts)
             + f" | verdict | P(same verdict on a rerun) | seeds for {TARGET:.0%} |",
             "|---|---|---|---|---|---|" + "---|" * len(counts) + "---|---|---|"]
    for table, kind, c in paired:
        half = (c.hi - c.lo) / 2
        if kind == "gain":
            bar, targets = f"gain ≥ {ratio:g} x half-width", [abs(c.delta) / ratio]
        else:  # resolved (half-width < |Δ|) or bounded (|Δ| + half-width < bound), whichever comes first
            bar, targets = f"resolved, or |Δ| < {bound:.4f}", [abs(c.delta), bound - abs(c.delta)]
        needs = []
        for n in counts:
            options = [seeds_for(c.differences, t, prompts=n, limit=LIMIT) for t in targets]
            needs.append(_seeds(min((k for k in options if k is not None), default=None)))
        floor = projected_half_width(c.differences, LIMIT)  # what more seeds cannot remove: the prompts' part
        lines.append(f"| {table} | {c.a} > {c.b} | {c.delta:+.4f} | {half:.4f} | {floor:.4f} | {bar} | "
                     + " | ".join(needs)
                     + f" | {c.verdict} | {same_verdict(c):.2f} | {_seeds(seeds_to_replicate(c))} |")
    return "\n".join(lines) + f"\n\nmean gain over the base: {bound / fraction:.4f}\n"


def load_tables(configfiles: list[str], workdir: Path = Path(".")) -> Tables:
    """The tables of a finished run of these config files (merged in order) with its results under `workdir`."""
    exp = Experiment.from_files(configfiles)
    fmt = lambda pattern, r: workdir / pattern.format(setting=r.setting, method=r.method,  # noqa: E731
                                                       variant=r.variant, seed=r.seed)
    return Tables(exp, {r: fmt(EVAL_CSV, r) for r in exp.runs}, workdir / BASE_EVAL_CSV,
                  {r: fmt(RUN_LOG, r) for r in exp.runs})
