# E-GRPO reproduction DAG: world (default config only) -> train (setting x method x variant x seed)
# -> evaluate -> tables and figures in results/. Run: snakemake --cores all [--configfile config/flux.yaml]
from snakemake.utils import min_version

min_version("9.0")


# the embedded default unless a config is given (`--configfile config/flux.yaml` replaces it whole:
# merging two experiment configs key by key would mix their settings)
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/world.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
