"""Unpack the rule and call egrpo.report.make_tables (the logic lives in the library)."""
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from egrpo.report import make_tables  # noqa: E402

cfg = snakemake.config
runs = [tuple(r) for r in snakemake.params.runs]
make_tables(
    dict(zip(runs, map(Path, snakemake.input.evals))), Path(snakemake.input.base),
    dict(zip(runs, map(Path, snakemake.input.logs))),
    metrics=list(cfg["metrics"]), methods=cfg["methods"], settings=list(cfg["settings"]),
    ablation_setting=cfg["ablations"]["setting"], variants=snakemake.params.variants,
    compare_paper=cfg.get("compare_paper", False), out_dir=Path("results/tables"),
    metric_scales=cfg.get("metric_scales", {}),
)
