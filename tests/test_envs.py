"""`snakemake --use-conda`: the rule environment (workflow/envs/egrpo.yaml and its post-deploy script)
installs everything the code a rule runs imports. No conda here: the files are read, and the
post-deploy script's commands run in a fresh venv."""

import ast
import importlib.metadata as md
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = ROOT / "workflow" / "envs" / "egrpo.yaml"
POST_DEPLOY = ROOT / "workflow" / "envs" / "egrpo.post-deploy.sh"
OPTIONAL = {"tensorboard"}  # imported under try/except ImportError: the JSONL log is the record


def _name(requirement: str) -> str:
    return re.split(r"[<>=!\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def declared() -> set[str]:
    """Distributions the rule environment installs: the env file's, the package's own dependencies
    (pip install -e of the checkout) and the post-deploy script's --no-deps packages."""
    env = yaml.safe_load(ENV.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    script = [w for line in POST_DEPLOY.read_text().splitlines() if "--no-deps" in line
              for w in line.split("#")[0].split() if "==" in w]
    return {_name(r) for r in [*pip, *project["dependencies"], *script]}


def imported_modules() -> set[str]:
    """Top-level third-party modules imported by the library, the baselines and the rules' scripts."""
    files = [*ROOT.glob("egrpo/**/*.py"), *ROOT.glob("baselines/*.py"), *ROOT.glob("workflow/scripts/*.py")]
    names = set()
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("egrpo", "baselines", "__future__")}


def test_the_rule_environment_declares_every_import():
    dists = md.packages_distributions()
    have = declared()
    missing = {}
    for module in sorted(imported_modules() - OPTIONAL):
        names = {_name(d) for d in dists.get(module, [module])}
        if not names & have:
            missing[module] = sorted(names)
    assert not missing, f"imported but not installed by workflow/envs (add to pyproject.toml): {missing}"
    assert "hpsv2x" in have and "image-reward" in have and "torch" in have


def test_the_post_deploy_script_runs_in_a_fresh_environment(tmp_path):
    """The script's commands in a new venv that sees this environment's packages (no downloads of
    torch), from the checkout as Snakemake runs it: egrpo, its methods and the reward packages import."""
    venv = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    parent = [p for p in sys.path if p.endswith("site-packages")]
    (site / "parent_env.pth").write_text("\n".join(parent) + "\n")
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    r = subprocess.run(["bash", str(POST_DEPLOY)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    check = ("import egrpo.cli, hpsv2, open_clip; from egrpo.methods import registry; "
             "from egrpo.rewards.imagereward import install_compat; install_compat(); import ImageReward.ImageReward; "
             "print(sorted(registry()))")
    r = subprocess.run([str(venv / "bin" / "python"), "-c", check], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "dancegrpo" in r.stdout, r.stderr[-3000:]
    bad = subprocess.run(["bash", str(POST_DEPLOY)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "not the egrpo checkout" in bad.stderr  # run from elsewhere: a clear stop
