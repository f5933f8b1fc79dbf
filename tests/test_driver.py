"""The driver (the process that runs `snakemake`) needs Snakemake alone: it plans both DAGs where only
Snakemake, its SLURM plugin and their dependencies are importable (no torch, diffusers, transformers,
peft, and no installed egrpo: the workflow reads the package's config models from the checkout, with
pydantic and PyYAML alone). The blocking is a sitecustomize on PYTHONPATH, so the real `snakemake`
command runs under it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import job_counts

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
BLOCKED = ("torch", "torchvision", "diffusers", "transformers", "peft")
# numpy and pandas come with the SLURM plugin (it imports them whenever Snakemake starts), not with
# conda's snakemake: the config models must not need them either
HEAVY = (*BLOCKED, "numpy", "pandas")

# Installed before anything else runs: every top-level module of a distribution outside the dependency
# closure of snakemake + snakemake-executor-plugin-slurm raises ImportError; the editable install's
# finder is removed, so egrpo is importable only from a folder on sys.path (the checkout).
SITECUSTOMIZE = '''
import importlib.abc, importlib.metadata as md, re, sys

def _name(n):
    return re.sub(r"[-_.]+", "-", n).lower()

def _closure(roots):
    seen, todo = set(), list(roots)
    while todo:
        n = todo.pop()
        if _name(n) in seen:
            continue
        try:
            d = md.distribution(n)
        except md.PackageNotFoundError:
            continue
        seen.add(_name(n))
        todo += [re.split(r"[ ;<>=!\\[~(]", r)[0] for r in d.requires or [] if "extra ==" not in r]
    return seen

ALLOWED = _closure(["snakemake", "snakemake-executor-plugin-slurm"])
BLOCKED = {top for top, dists in md.packages_distributions().items()
           if not any(_name(d) in ALLOWED for d in dists)} - set(sys.stdlib_module_names) - {"egrpo", "baselines"}

class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed in a Snakemake-only environment (test_driver)")

sys.meta_path[:] = [_Blocked()] + [f for f in sys.meta_path if not str(getattr(f, "__module__", "")).startswith("__editable__")]
'''


@pytest.fixture(scope="module")
def driver_env(tmp_path_factory):
    site = tmp_path_factory.mktemp("snakemake_only")
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": str(site)}
    return env


def run(args, env, cwd):
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_environment_has_only_snakemake(driver_env, tmp_path):
    """The blocking works (else the planning test below proves nothing): torch and the rest, and an
    installed egrpo, are not importable; Snakemake, pydantic and PyYAML are."""
    for module in (*BLOCKED, "egrpo"):
        r = run([sys.executable, "-c", f"import {module}"], driver_env, tmp_path)
        assert r.returncode != 0 and ("ModuleNotFoundError" in r.stderr or "ImportError" in r.stderr), (module, r.stderr)
    r = run([sys.executable, "-c", "import snakemake.api, pydantic, yaml"], driver_env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]


def test_the_config_models_import_without_torch(driver_env):
    """egrpo.experiment, every method's config (egrpo.plans, baselines/) and the rewards' options, from
    the checkout, import nothing of torch's family, numpy or pandas."""
    code = ("import sys; from egrpo.experiment import Experiment; from egrpo.methods import registry; "
            "import egrpo.schema, egrpo.cluster, egrpo.determinism; names = sorted(registry()); "
            f"assert not [m for m in sys.modules if m.partition('.')[0] in {HEAVY!r}]; print(names)")
    r = run([sys.executable, "-c", code], driver_env, ROOT)
    assert r.returncode == 0 and "dancegrpo" in r.stdout and "mixgrpo" in r.stdout, r.stderr[-3000:]


@pytest.mark.parametrize("config", ["config/config.yaml", "config/flux.yaml"])
@pytest.mark.parametrize("snakefile", ["Snakefile", "workflow/Snakefile"])
def test_a_snakemake_only_driver_plans_both_dags(driver_env, tmp_path, config, snakefile):
    """`snakemake -n` of the root and the catalog Snakefile plans the same jobs without the package's
    dependencies as with them."""
    args = [str(SNAKEMAKE), "-n", "-s", snakefile, "--configfile", config, "--directory", str(tmp_path)]
    bare = run(args, driver_env, ROOT)
    assert bare.returncode == 0, (bare.stdout + bare.stderr)[-3000:]
    full = run(args, {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, ROOT)
    assert full.returncode == 0, (full.stdout + full.stderr)[-3000:]
    counts = job_counts(bare.stdout)
    assert counts == job_counts(full.stdout) and counts["train"] > 1


def test_a_target_after_configfile(tmp_path):
    """`--configfile=FILE TARGET` plans (the README's fix). `--configfile FILE TARGET` reads the target as
    a second config file, and Snakemake fails on it while it builds its settings from the arguments,
    before it reads any Snakefile or profile code: nothing of the workflow can turn it into one line.
    When Snakemake reports it itself (or lets it reach the workflow), this test fails: then say so in
    the README, or check `workflow.overwrite_configfiles` in workflow/Snakefile."""
    fixed = run([str(SNAKEMAKE), "-n", "--configfile=config/flux.yaml", "default", "--directory", str(tmp_path)],
                os.environ, ROOT)
    assert fixed.returncode == 0, (fixed.stdout + fixed.stderr)[-3000:]
    wrong = run([str(SNAKEMAKE), "-n", "--configfile", "config/flux.yaml", "default", "--directory", str(tmp_path)],
                os.environ, ROOT)
    out = wrong.stdout + wrong.stderr
    assert wrong.returncode == 1 and "No such file or directory: 'default'" in out
    assert "ConfigSettings" in out and "Snakefile" not in out  # in Snakemake's argument handling, no workflow frame


def test_jobs_import_this_checkouts_package(driver_env, tmp_path):
    """A job's Python imports the package from the checkout the workflow was parsed from, not from
    whatever its environment installed (a conda environment another checkout built): here no egrpo is
    installed at all, and a job of the workflow's rules still imports it, from ROOT."""
    (tmp_path / "Snakefile").write_text(
        f'configfile: "{ROOT}/config/config.yaml"\n'
        f'include: "{ROOT}/workflow/rules/common.smk"\n'
        'rule which:\n'
        '    output: "which.txt"\n'
        '    shell: "python -c \'import egrpo; print(egrpo.__file__)\' > {output}"\n')
    r = run([str(SNAKEMAKE), "--cores", "1", "-s", "Snakefile", "which"],
            {**driver_env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}, tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert (tmp_path / "which.txt").read_text().strip() == str(ROOT / "egrpo" / "__init__.py")
