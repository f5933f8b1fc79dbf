"""Summarise a finished DAG's per-rule benchmark files (Snakemake `benchmark:` TSVs) into one table.

    python benchmarks/dag_walltime.py [WORKDIR] [--wall SECONDS]

Per rule: jobs, total and mean seconds, max RSS; and each rule's share of the summed job time. With
--wall (the measured wall time of the whole run), also the parallel speed-up (summed / wall).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def summarise(workdir: Path) -> pd.DataFrame:
    rows = []
    for tsv in sorted((workdir / "benchmarks").rglob("*.tsv")):
        rule = tsv.relative_to(workdir / "benchmarks").parts[0].removesuffix(".tsv")
        df = pd.read_csv(tsv, sep="\t")
        rows.append({"rule": rule, "s": float(df["s"].iloc[-1]), "max_rss_mb": float(df["max_rss"].iloc[-1])})
    jobs = pd.DataFrame(rows)
    table = jobs.groupby("rule").agg(jobs=("s", "size"), total_s=("s", "sum"), mean_s=("s", "mean"),
                                     max_rss_mb=("max_rss_mb", "max")).sort_values("total_s", ascending=False)
    table["share"] = table.total_s / table.total_s.sum()
    return table


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


if __name__ == "__main__":
    main()
