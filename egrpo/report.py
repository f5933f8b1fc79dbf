"""Tables of the paper (1-4) from per-image evaluation CSVs: mean and 95% CI over seeds, the paper's
number beside each reproduced one (FLUX config) or whether its qualitative ordering holds (default
world), plus compute per method. Written as Markdown, LaTeX and CSV."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from . import paper

METHOD_NAMES = {"base": "Base model", "dancegrpo": "DanceGRPO", "mixgrpo": "MixGRPO",
                "mixgrpo_flash": "MixGRPO-Flash", "flowgrpo": "Flow-GRPO", "egrpo": "E-GRPO"}


def ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the t-based 95% CI over seeds (0 for a single seed)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def seed_means(csvs: dict[tuple, Path], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per (setting, method, variant, seed): the mean of each metric over the test prompts."""
    rows = []
    for (setting, method, variant, seed), path in csvs.items():
        df = pd.read_csv(path)
        rows.append({"setting": setting, "method": method, "variant": variant, "seed": seed,
                     **{m: float(df[m].mean()) for m in metrics}})
    return pd.DataFrame(rows)


def run_compute(log: Path) -> dict:
    """Transformer passes (sampling + training forward) and wall time of a training run, from its log."""
    rows = [json.loads(line) for line in Path(log).read_text().splitlines()]
    return {"passes": sum(r["passes/sampling"] + r["passes/training"] for r in rows),
            "wall_s": sum(r["time/total"] for r in rows)}


def _fmt(mean: float, half: float) -> str:
    return f"{mean:.4f}" if half == 0 else f"{mean:.4f} ± {half:.4f}"


def build_table(means: pd.DataFrame, rows: Sequence[tuple[str, str, str, str]], metrics: Sequence[str],
                reference: dict | None, compute: dict | None = None) -> pd.DataFrame:
    """rows: (label, setting, method, variant). reference: label -> {metric: paper value} or None."""
    out = []
    for label, setting, method, variant in rows:
        sel = means[(means.setting == setting) & (means.method == method) & (means.variant == variant)]
        if sel.empty:
            continue
        rec = {"row": label, "seeds": len(sel)}
        for m in metrics:
            mean, half = ci95(sel[m].tolist())
            rec[m] = mean
            rec[f"{m}_ci95"] = half
            if reference and label in reference and m in reference[label]:
                rec[f"{m}_paper"] = reference[label][m]
                rec[f"{m}_diff"] = mean - reference[label][m]
        if compute and (setting, method, variant) in compute:
            rec.update(compute[(setting, method, variant)])
        out.append(rec)
    return pd.DataFrame(out)


def render(table: pd.DataFrame, metrics: Sequence[str], with_paper: bool) -> pd.DataFrame:
    """The human-readable version: 'mean ± ci' cells, paper value and difference beside them."""
    disp = pd.DataFrame({"": table["row"], "seeds": table["seeds"]})
    for m in metrics:
        disp[m] = [_fmt(a, b) for a, b in zip(table[m], table[f"{m}_ci95"])]
        if with_paper and f"{m}_paper" in table:
            disp[f"{m} (paper)"] = table[f"{m}_paper"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
            disp[f"{m} Δ"] = table[f"{m}_diff"].map(lambda v: "" if pd.isna(v) else f"{v:+.4f}")
    for col in ("passes", "wall_s"):
        if col in table:
            disp[col] = table[col].map(lambda v: "" if pd.isna(v) else (f"{v:,.0f}" if col == "passes" else f"{v:.1f}"))
    return disp


def write_table(table: pd.DataFrame, metrics: Sequence[str], stem: Path, title: str, notes: Sequence[str],
                with_paper: bool) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(stem.with_suffix(".csv"), index=False)
    disp = render(table, metrics, with_paper)
    md = [f"# {title}", "", disp.to_markdown(index=False), ""] + [f"- {n}" for n in notes]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    stem.with_suffix(".tex").write_text(disp.to_latex(index=False, escape=True, caption=title))


def ordering_holds(table: pd.DataFrame, metric: str, order: Sequence[str]) -> bool | None:
    """Does the reproduced metric rank rows as `order` (best first) does? None when a row is missing."""
    vals = {r: v for r, v in zip(table["row"], table[metric])}
    if not all(o in vals for o in order):
        return None
    return all(vals[a] > vals[b] for a, b in zip(order, order[1:]))


def paper_reference(table_no: int, setting: str | None = None) -> dict:
    """Paper values keyed by our row labels."""
    if table_no == 1:
        return {METHOD_NAMES[m]: v for m, v in paper.TABLE1[setting].items()}
    src = {2: paper.TABLE2, 3: paper.TABLE3, 4: paper.TABLE4}[table_no]
    return {variant_label(k): v for k, v in src.items()}


def variant_label(variant: str) -> str:
    if variant == "main":
        return "E-GRPO (adaptive, tau 2.2, first 8)"
    if variant.startswith("tau"):
        return f"tau = {variant[3:]}"
    if variant.startswith("fixed"):
        return f"fixed {variant[5:]}-step merge"
    if variant.startswith("active_"):
        return {"first4": "first 4 steps", "first8": "first 8 steps", "second8": "second 8 steps",
                "all": "all steps"}[variant[7:]]
    return variant


def main_row_best(table: pd.DataFrame, metric: str, main: str) -> bool | None:
    """Is the main E-GRPO row the best on `metric` (the paper's claim in Tables 2-4)?"""
    if main not in set(table["row"]) or len(table) < 2:
        return None
    return table.loc[table["row"] == main, metric].iloc[0] >= table[metric].max()


def make_tables(eval_csvs: dict[tuple, Path], base_csv: Path, logs: dict[tuple, Path], *, metrics: Sequence[str],
                methods: Sequence[str], settings: Sequence[str], ablation_setting: str, variants: Sequence[str],
                compare_paper: bool, out_dir: Path, metric_scales: dict[str, str]) -> list[Path]:
    """Write Tables 1-4 (md/tex/csv) into out_dir; keys of eval_csvs/logs: (setting, method, variant, seed)."""
    means = seed_means(eval_csvs, metrics)
    base = pd.read_csv(base_csv)
    for s in settings:
        means.loc[len(means)] = {"setting": s, "method": "base", "variant": "main", "seed": 0,
                                 **{m: float(base[m].mean()) for m in metrics}}
    per_run: dict[tuple, list[dict]] = {}
    for (s, m, v, _seed), log in logs.items():
        per_run.setdefault((s, m, v), []).append(run_compute(log))
    compute = {k: {c: float(np.mean([r[c] for r in runs])) for c in ("passes", "wall_s")} for k, runs in per_run.items()}
    notes = ["mean ± half-width of the t-based 95% CI over training seeds; base model: one deterministic sample per prompt",
             "scales: " + ", ".join(f"{m} = {metric_scales.get(m, 'raw')}" for m in metrics),
             "passes: transformer forward passes per run (sampling rows + trained rows); wall_s: training time"]
    if compare_paper:
        notes.append("paper: the value reported in arXiv 2601.00423; Δ = reproduced - paper")
    key, written = metrics[0], []

    def write(table, stem, title, claim, verdict):
        extra = [] if compare_paper else [
            f"paper's qualitative claim on {key}, {claim}: " +
            {None: "n/a (rows missing)", True: "holds", False: "does not hold"}[verdict]]
        write_table(table, metrics, out_dir / stem, title, notes + extra, with_paper=compare_paper)
        written.append(out_dir / f"{stem}.md")

    for s in settings:
        rows = [(METHOD_NAMES[m], s, m, "main") for m in ["base", *methods]]
        ref = paper_reference(1, s) if compare_paper and s in paper.TABLE1 else None
        table = build_table(means, rows, metrics, ref, compute)
        order = [METHOD_NAMES[m] for m in ("egrpo", "mixgrpo", "dancegrpo", "base")]
        write(table, f"table1_{s}", f"Table 1 ({s}): main results", " > ".join(order), ordering_holds(table, key, order))

    main = variant_label("main")
    ablations = {
        2: ("table2_merge", "Table 2: fixed vs adaptive merge length (E-GRPO)",
            [v for v in variants if v.startswith("fixed")] + ["main"]),
        3: ("table3_steps", "Table 3: which steps are trained (E-GRPO)",
            [v for v in ("active_first4", "main", "active_second8", "active_all") if v in (*variants, "main")]),
        4: ("table4_tau", "Table 4: entropy threshold tau (E-GRPO)",
            sorted([v for v in variants if v.startswith("tau")] + ["main"],
                   key=lambda v: 2.2 if v == "main" else float(v[3:]))),
    }
    for no, (stem, title, vs) in ablations.items():
        rows = [(variant_label(v), ablation_setting, "egrpo", v) for v in vs]
        table = build_table(means, rows, metrics, paper_reference(no) if compare_paper else None, compute)
        write(table, stem, title, f"{main} is best", main_row_best(table, key, main))
    return written
