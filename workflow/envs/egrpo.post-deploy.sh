#!/usr/bin/env bash
# Runs once when Snakemake creates the environment of workflow/envs/egrpo.yaml (--use-conda), inside
# it. Snakemake runs a copy of this file from its conda folder, in its working directory: the root
# of the checkout (or set EGRPO_ROOT to it).
set -euo pipefail
root="${EGRPO_ROOT:-$PWD}"
if ! grep -qs '^name = "egrpo"' "$root/pyproject.toml"; then
    echo "egrpo post-deploy: $root is not the egrpo checkout; run snakemake from it or set EGRPO_ROOT" >&2
    exit 1
fi
# egrpo and its dependencies (pyproject.toml) at the locked versions (egrpo.lock.txt; a torch CUDA build
# that also runs on CPUs)
python -m pip install -c "$root/workflow/envs/egrpo.lock.txt" -e "$root"
python -m pip install --no-deps hpsv2x==1.2.0 image-reward==1.5      # their pins conflict with open_clip, transformers 5
