"""Summarise a finished DAG's per-rule benchmark files (Snakemake `benchmark:` TSVs) into one table.

    python benchmarks/dag_walltime.py [WORKDIR] [--wall SECONDS]

Per rule: jobs, total and mean seconds, max RSS; and each rule's share of the summed job time. With
--wall (the measured wall time of the whole run), also the parallel speed-up (summed / wall). The
train jobs' time is split into GRPO iterations (their logs' time/total) and everything else (process
start, imports, loading, checkpoints, and the evaluation a job runs with eval.with_training).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def summarise(workdir: Path) -> pd.DataFrame:
    rows = []
    for tsv in sorted((workdir / "logs" / "benchmarks").rglob("*.tsv")):
        rule = tsv.relative_to(workdir / "logs" / "benchmarks").parts[0].removesuffix(".tsv")
        df = pd.read_csv(tsv, sep="\t")
        rows.append({"rule": rule, "s": float(df["s"].iloc[-1]), "max_rss_mb": float(df["max_rss"].iloc[-1])})
    jobs = pd.DataFrame(rows)
    table = jobs.groupby("rule").agg(jobs=("s", "size"), total_s=("s", "sum"), mean_s=("s", "mean"),
                                     max_rss_mb=("max_rss_mb", "max")).sort_values("total_s", ascending=False)
    table["share"] = table.total_s / table.total_s.sum()
    return table


def iteration_seconds(workdir: Path) -> float:
    """Seconds spent inside GRPO iterations, summed over every run's final log."""
    import json

    return sum(json.loads(line)["time/total"] for log in (workdir / "results" / "runs").rglob("final/log.jsonl")
               for line in log.read_text().splitlines())


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("workdir", nargs="?", default=".")
    p.add_argument("--wall", type=float, default=None)
    args = p.parse_args()
    table = summarise(Path(args.workdir))
    print(table.to_markdown(floatfmt=".2f"))
    total = table.total_s.sum()
    print(f"\nsummed job time {total:.0f} s" + (f"; wall {args.wall:.0f} s; speed-up {total / args.wall:.2f}"
                                              if args.wall else ""))
    if "train" in table.index:
        it = iteration_seconds(Path(args.workdir))
        print(f"train jobs: {it:.0f} s in GRPO iterations, {table.total_s['train'] - it:.0f} s outside them "
              f"(start-up, loading, checkpoints, evaluation)")


if __name__ == "__main__":
    main()
