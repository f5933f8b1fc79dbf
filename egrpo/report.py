"""Tables of the paper (1-4) from the per-image evaluation CSVs and the training logs, with paired,
resolution-aware comparisons (egrpo.stats): each method's gain over the base model, the paper's
ordering claims pair by pair, each ablation's claim that the main E-GRPO row is best, and the
methods' training reward at equal transformer passes. Each table's claims are decided together
(egrpo.verdicts). Written as Markdown, HTML (for the report), LaTeX and CSV."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from . import paper
from . import report_pages as pages
from .experiment import MAIN, Experiment, Run
from .methods import display_name
from .stats import Comparison, chain_verdict, compare, compare_seeds, crossed_interval, per_prompt
from .verdicts import Claim, decide, frame

BUDGET_WINDOW = 2  # iterations of probe rewards averaged at a compute budget


# ---- data -------------------------------------------------------------------------------------
def load_scores(csvs: dict[Run, Path], metrics: Sequence[str]) -> dict[tuple, dict[str, np.ndarray]]:
    """(setting, method, variant) -> metric -> scores [seeds, prompts] (seeds in increasing order; each
    prompt's score the mean over its evaluation samples)."""
    by_config: dict[tuple, dict[int, pd.DataFrame]] = {}
    for run, path in csvs.items():
        by_config.setdefault((run.setting, run.method, run.variant), {})[run.seed] = per_prompt(pd.read_csv(path), metrics)
    out = {}
    for key, seeds in by_config.items():
        frames = [seeds[s] for s in sorted(seeds)]
        if any(not f.index.equals(frames[0].index) for f in frames):
            raise ValueError(f"runs of {key} were evaluated on different prompts: not paired")
        out[key] = {m: np.stack([f[m].to_numpy(np.float64) for f in frames]) for m in metrics}
    return out


def load_base(path: Path, metrics: Sequence[str]) -> tuple[dict[str, np.ndarray], int]:
    """The base model's scores [1, prompts] per metric, and how many images each prompt's score averages."""
    raw = pd.read_csv(path)
    df = per_prompt(raw, metrics)
    return {m: df[m].to_numpy(np.float64)[None] for m in metrics}, len(raw) // len(df)


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@dataclass
class Compute:
    """One run's compute and training curve: per iteration the passes spent before it and its probe
    rewards (the policy's ODE sample per prompt)."""

    passes: float
    wall_s: float
    before: np.ndarray  # [iterations] cumulative method passes before each iteration
    probes: list[list[float]]  # per iteration, the per-prompt probe rewards of `reward`

    @classmethod
    def from_log(cls, path: Path, reward: str) -> "Compute":
        rows = read_log(path)
        spent = np.array([r["passes/sampling"] + r["passes/training"] for r in rows], dtype=np.float64)
        return cls(float(spent.sum()), float(sum(r["time/total"] for r in rows)),
                   np.concatenate([[0.0], np.cumsum(spent)[:-1]]), [r.get(f"probe/{reward}/prompts", []) for r in rows])

    def at_budget(self, budget: float) -> np.ndarray:
        """Probe rewards of the last BUDGET_WINDOW iterations whose policy had spent <= budget passes."""
        eligible = [k for k, b in enumerate(self.before) if b <= budget and self.probes[k]]
        return np.array([v for k in eligible[-BUDGET_WINDOW:] for v in self.probes[k]])


# ---- cells ------------------------------------------------------------------------------------
def _interval(values: np.ndarray) -> tuple[float, float]:
    mean, lo, hi = crossed_interval(values) if values.shape[1] > 1 else (float(values.mean()), 0.0, 0.0)
    return mean, (hi - lo) / 2


def _fmt(mean: float, half: float) -> str:
    return f"{mean:.4f}" if half == 0 else f"{mean:.4f} ± {half:.4f}"


@dataclass
class Ordering:
    """The paper's ordering A > B > ... > base on a metric, from its adjacent claims (printed once decided)."""

    metric: str
    label: str
    claims: list[Claim]

    def __str__(self) -> str:
        if not all(c.decided for c in self.claims):
            raise RuntimeError("an ordering is printed once its table's claims are decided together")
        return f"paper's ordering on {self.metric}, {self.label}: {chain_verdict([c.comparison for c in self.claims])}"


# ---- tables -----------------------------------------------------------------------------------
class Tables:
    """Builds Tables 1-4 of an experiment from its evaluation CSVs and training logs."""

    def __init__(self, exp: Experiment, eval_csvs: dict[Run, Path], base_csv: Path, logs: dict[Run, Path]):
        self.exp = exp
        self.metrics = list(exp.metrics)
        self.scores = load_scores(eval_csvs, self.metrics)
        self.base, self.samples = load_base(base_csv, self.metrics)
        self.logs = logs
        self.claims: list[Claim] = []  # as recorded; each table's decided together (build_all)
        self.one_seed = len(exp.seeds) == 1

    def key_metric(self, setting: str) -> str:
        """The metric of the setting's first training reward (HPS in both of the paper's settings)."""
        trained = self.exp.settings[setting].names[0]
        for label, reward in self.exp.metrics.items():
            if reward == trained:
                return label
        return self.metrics[0]

    def compute(self, setting: str, method: str, variant: str = MAIN) -> list[Compute]:
        reward = self.exp.settings[setting].names[0]
        return [Compute.from_log(self.logs[r], reward) for r in self.exp.runs
                if (r.setting, r.method, r.variant) == (setting, method, variant)]

    def record(self, table: str, claim: str, metric: str, c: Comparison, kind: str) -> Claim:
        """Record a claim of `table` (its family); the returned note prints once the family is decided."""
        self.claims.append(Claim(table, claim, metric, kind, c))
        return self.claims[-1]

    def row(self, label: str, values: dict[str, np.ndarray], reference: dict | None) -> dict:
        rec = {"row": label, "seeds": next(iter(values.values())).shape[0]}
        for m in self.metrics:
            rec[m], rec[f"{m}_ci95"] = _interval(values[m])
            if reference and m in reference:
                rec[f"{m}_paper"], rec[f"{m}_diff"] = reference[m], rec[m] - reference[m]
        return rec

    def table1(self, setting: str) -> tuple[pd.DataFrame, list]:
        exp, key = self.exp, self.key_metric(setting)
        ref = paper.TABLE1.get(setting) if exp.compare_paper else None
        rows = [self.row(display_name("base"), self.base, (ref or {}).get("base"))]
        gains, computes = {}, {}
        for m in exp.methods:
            values = self.scores[(setting, m, MAIN)]
            rec = self.row(display_name(m), values, (ref or {}).get(m))
            gains[m] = compare(display_name(m), display_name("base"), values[key], self.base[key])
            rec[f"gain_{key}"] = gains[m].cell()
            computes[m] = self.compute(setting, m)
            rec["passes"] = float(np.mean([c.passes for c in computes[m]]))
            rec["wall_s"] = float(np.mean([c.wall_s for c in computes[m]]))
            rows.append(rec)
        gain_claims = {m: self.record(f"table1_{setting}", "gain over the base model", key, gains[m], "gain")
                       for m in exp.methods}
        notes: list[str | Claim | Ordering] = list(gain_claims.values())
        # the paper's ordering (by its HPS column), adjacent pairs on our key metric, paired by seed and prompt
        claimed = paper.TABLE1.get(setting, paper.TABLE1["hps"])
        order = sorted(exp.methods, key=lambda m: -claimed.get(m, {}).get("hps", -1.0))
        pairs = []
        for a, b in zip(order, order[1:]):
            c = compare(display_name(a), display_name(b), self.scores[(setting, a, MAIN)][key],
                        self.scores[(setting, b, MAIN)][key])
            pairs.append(self.record(f"table1_{setting}", "paper's ordering", key, c, "pairwise"))
        label = " > ".join([display_name(m) for m in order] + [display_name("base")])
        notes += [*pairs, Ordering(key, label, [*pairs, gain_claims[order[-1]]])]
        if {"egrpo", "g2rpo"} <= set(exp.methods):
            notes.append(f"{display_name('egrpo')} is {display_name('g2rpo')} plus the entropy-guided merge (the same "
                         f"plan with every merge length 1): their difference is the merge's effect")
        notes += self.compute_matched(setting, order, computes, rows)
        return pd.DataFrame(rows), notes + self.rewards_note(setting)

    def rewards_note(self, setting: str) -> list[str]:
        """How each method's training reward combines a setting's rewards (from its resolved run config),
        and which rows no released code trains (`settings.<name>.constructed`)."""
        names, constructed = self.exp.settings[setting].names, self.exp.settings[setting].constructed
        if len(names) < 2 and not constructed:
            return []
        parts = []
        for m in self.exp.methods:
            r = self.exp.run_config(setting, m).rewards
            w = r.weight_map()
            how = "each normalised in the group, then summed" if r.aggregation == "normalise_each" else \
                "summed, then normalised in the group"
            parts.append(f"{display_name(m)} {' + '.join(f'{w[n]:g} {n}' for n in r.names)} ({how})")
        note = "training reward: " + "; ".join(parts)
        if constructed:
            note += (f". {', '.join(display_name(m) for m in constructed)}: no released code trains this setting; "
                     "the row is the harness's construction")
        return [note]

    def compute_matched(self, setting: str, order: list[str], computes: dict, rows: list[dict]) -> list:
        """Training reward (the policy's ODE probe on the training prompts) at the transformer passes of
        the cheapest method's whole run: seed-paired intervals (the methods saw different prompts there)."""
        if not all(c.probes and c.probes[0] for cs in computes.values() for c in cs):
            return ["reward at equal compute: n/a (runs logged no probe rewards; train.probe is off)"]
        reward = self.exp.settings[setting].names[0]
        budget = min(np.mean([c.passes for c in cs]) for cs in computes.values())
        at = {m: [c.at_budget(budget) for c in cs] for m, cs in computes.items()}
        for rec in rows[1:]:
            m = next(k for k in computes if display_name(k) == rec["row"])
            rec["reward_at_budget"] = float(np.mean([u.mean() for u in at[m]]))
        notes = [f"reward at equal compute: {reward} of the policy's ODE sample on the training prompts after "
                 f"{budget:,.0f} transformer passes (the cheapest method's whole run), the last "
                 f"{BUDGET_WINDOW} iterations before it"]
        for a, b in zip(order, order[1:]):
            c = compare_seeds(display_name(a), display_name(b), at[a], at[b])
            notes.append(self.record(f"table1_{setting}", "equal compute", f"training {reward}", c, "compute"))
        return notes

    def ablation(self, method: str, axis) -> tuple[pd.DataFrame, list]:
        exp, s = self.exp, self.exp.ablations.setting
        key = self.key_metric(s)
        ref_table = paper.ABLATIONS.get(method, {}).get(axis.key, {}) if exp.compare_paper else {}
        rows, notes = [], []
        main = self.scores[(s, method, MAIN)]
        rows_spec = exp.table_rows(method, axis)
        main_label = next(label for variant, label, _ in rows_spec if variant.name == MAIN)
        for variant, label, x in rows_spec:
            values = self.scores[(s, method, variant.name)]
            rec = self.row(label, values, ref_table.get(x))
            rec["x"] = "adaptive" if x is None else x
            compute = self.compute(s, method, variant.name)
            rec["passes"] = float(np.mean([c.passes for c in compute]))
            rec["wall_s"] = float(np.mean([c.wall_s for c in compute]))
            rows.append(rec)
            if variant.name != MAIN:
                c = compare(main_label, label, main[key], values[key])
                notes.append(self.record(axis.stem, "main row is best", key, c, "ablation"))
        return pd.DataFrame(rows), notes

    # ---- writing ------------------------------------------------------------------------------
    def common_notes(self) -> list[str]:
        scales = self.exp.metric_scales
        seeds = ("one training seed: intervals cover test prompts only" if self.one_seed else
                 f"{len(self.exp.seeds)} training seeds x {self.base[self.metrics[0]].shape[1]} test prompts")
        return [f"mean ± half-width of the 95% interval over training seeds and test prompts ({seeds}; "
                f"two-way random-effects t-interval, docs/statistics.md); {self.samples_note()}",
                "Δ [lo, hi] of a claim A > B: its 95% interval, paired by seed and prompt; beside it the interval "
                "adjusted for the claims of its table (Holm), on which the verdict is decided, so that the chance of "
                "any false 'resolved' in a table stays under 5% (docs/statistics.md)",
                "scales: " + ", ".join(f"{m} = {scales.get(m, 'raw')}" for m in self.metrics),
                "passes: transformer passes per run (sampling rows + trained rows); wall_s: training time"]

    def samples_note(self) -> str:
        return ("one sample per prompt" if self.samples == 1 else f"{self.samples} samples per prompt, averaged") + \
            " (the base model's too: it has no training seed)"

    def write(self, table: pd.DataFrame, notes: list, stem: Path, title: str) -> None:
        stem.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(stem.with_suffix(".csv"), index=False)
        disp = render(table, self.metrics, self.exp.compare_paper)
        lines = self.common_notes() + notes
        if self.exp.compare_paper:
            lines.append("paper: the value reported in arXiv 2601.00423; Δ = reproduced - paper")
        # numparse off: tabulate would print a signed cell such as "+0.2066" as 0.2066
        md = [f"# {title}", "", disp.to_markdown(index=False, disable_numparse=True,
                                                 colalign=("left",) + ("right",) * (disp.shape[1] - 1)),
              "", *[f"- {n}" for n in lines]]
        stem.with_suffix(".md").write_text("\n".join(md) + "\n")
        stem.with_suffix(".html").write_text(pages.table_page(title, disp, lines))  # what the HTML report shows
        stem.with_suffix(".tex").write_text(disp.to_latex(index=False, escape=True, caption=title))

    def build_all(self) -> list[tuple[str, str, pd.DataFrame, list[str]]]:
        """(file stem, title, table, notes) of every table; records every claim on the way and decides
        each table's claims together."""
        self.claims = []
        built = [(f"table1_{s}", f"Table 1 ({s}): main results", *self.table1(s)) for s in self.exp.settings]
        built += [(axis.stem, axis.title, *self.ablation(method, axis)) for method, axis in self.exp.tables]
        decide(self.claims)
        return built

    def write_all(self, out_dir: Path) -> list[Path]:
        written = []
        for stem, title, table, notes in self.build_all():
            self.write(table, notes, out_dir / stem, title)
            written.append(out_dir / f"{stem}.md")
        claims = frame(self.claims)
        claims.to_csv(out_dir / "comparisons.csv", index=False)
        (out_dir / "comparisons.html").write_text(pages.comparisons_page(claims))
        return written


def render(table: pd.DataFrame, metrics: Sequence[str], with_paper: bool) -> pd.DataFrame:
    """The human-readable version: 'mean ± ci' cells, paper value and difference beside them."""
    disp = pd.DataFrame({"": table["row"], "seeds": table["seeds"]})
    for m in metrics:
        disp[m] = [_fmt(a, b) for a, b in zip(table[m], table[f"{m}_ci95"])]
        if with_paper and f"{m}_paper" in table:
            disp[f"{m} (paper)"] = table[f"{m}_paper"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
            disp[f"{m} Δ"] = table[f"{m}_diff"].map(lambda v: "" if pd.isna(v) else f"{v:+.4f}")
    for col in table.columns:
        if col.startswith("gain_"):
            disp[f"gain over base ({col[5:]}, 95%)"] = table[col].fillna("")  # its verdict: the notes
    if "reward_at_budget" in table:
        disp["reward at equal passes"] = table["reward_at_budget"].map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
    for col in ("passes", "wall_s"):
        if col in table:
            disp[col] = table[col].map(lambda v: "" if pd.isna(v) else (f"{v:,.0f}" if col == "passes" else f"{v:.1f}"))
    return disp
