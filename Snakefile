# The repository's entry point: `snakemake --cores all` from here runs the workflow of
# workflow/Snakefile (kept there for Snakemake's workflow catalog) with profiles/default.
include: "workflow/Snakefile"


# an include does not carry the included file's default target: this file names its own
rule default:
    default_target: True
    input:
        rules.all.input,


localrules:
    default,
