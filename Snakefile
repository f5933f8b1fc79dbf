# E-GRPO reproduction DAG. Step 1 of 6: only the entropy table of the training schedule exists so
# far; training, evaluation and the paper's tables/figures arrive with workflow/rules/*.smk.
include: "workflow/rules/entropy.smk"


rule all:
    default_target: True
    input:
        "results/entropy_table.csv",
