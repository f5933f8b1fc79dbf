"""Unpack the rule and call egrpo.report (the logic lives in the library)."""
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from egrpo import determinism  # noqa: E402
from egrpo.experiment import Experiment  # noqa: E402
from egrpo.report import Tables  # noqa: E402
from egrpo.report_pages import write_run_pages  # noqa: E402

exp = Experiment.load(snakemake.config)
determinism.apply(exp.determinism)  # as every job: before its first tensor operation
runs = exp.runs
tables = Tables(exp, dict(zip(runs, map(Path, snakemake.input.evals))), Path(snakemake.input.base),
                dict(zip(runs, map(Path, snakemake.input.logs))))
out = Path(snakemake.output.comparisons).parent
tables.write_all(out)
# the report's provenance pages: each run config by its (setting, method, variant), each run's
# provenance.json (exported beside its log) by run
configs = {"/".join(c): Path(p) for c, p in zip(exp.configurations, snakemake.input.configs)}
provenance = {f"{r.setting}/{r.method}/{r.variant}/seed{r.seed}": Path(log).parent / "provenance.json"
              for r, log in zip(runs, snakemake.input.logs)}
write_run_pages(out, Path(snakemake.input.experiment), configs, provenance)
