"""Unpack the rule and call egrpo.report (the logic lives in the library)."""
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from egrpo import determinism  # noqa: E402
from egrpo.experiment import Experiment  # noqa: E402
from egrpo.report import Tables  # noqa: E402

exp = Experiment.load(snakemake.config)
determinism.apply(exp.determinism)  # as every job: before its first tensor operation
runs = exp.runs
tables = Tables(exp, dict(zip(runs, map(Path, snakemake.input.evals))), Path(snakemake.input.base),
                dict(zip(runs, map(Path, snakemake.input.logs))))
tables.write_all(Path(snakemake.output.comparisons).parent)
