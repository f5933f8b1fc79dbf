"""`snakemake --use-conda`: the rule environment (workflow/envs/egrpo.yaml and its post-deploy script)
installs everything the code a rule runs imports, at the lock's versions, and its file changes when the
dependencies do. No conda here: the files are read, and the post-deploy script's commands run in a
fresh venv."""

import ast
import importlib.metadata as md
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = ROOT / "workflow" / "envs" / "egrpo.yaml"
LOCK = ROOT / "workflow" / "envs" / "egrpo.lock.txt"
POST_DEPLOY = ROOT / "workflow" / "envs" / "egrpo.post-deploy.sh"
OPTIONAL = {"tensorboard"}  # imported under try/except ImportError: the JSONL log is the record


def _name(requirement: str) -> str:
    return re.split(r"[<>=!\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def locked() -> dict[str, str]:
    """name -> version of every line of the lock."""
    lines = [line.split(";")[0].strip() for line in LOCK.read_text().splitlines() if line and not line.startswith("#")]
    return {_name(line): line.split("==", 1)[1] for line in lines}


def declared() -> set[str]:
    """Distributions the rule environment installs: the package's own dependencies (pip install -e of
    the checkout, constrained by the lock) and the post-deploy script's --no-deps packages."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    script = [w for line in POST_DEPLOY.read_text().splitlines() if "--no-deps" in line
              for w in line.split("#")[0].split() if "==" in w]
    return {_name(r) for r in [*project["dependencies"], *script]}


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


def test_the_lock_pins_every_dependency_and_the_env_file_carries_its_digest(tmp_path):
    """The lock is what `python -m egrpo.envlock` writes from this (tested) environment, exact pins that
    satisfy pyproject.toml; the env file carries the digest of pyproject's dependencies + the lock
    (Snakemake names the environment by the file's content), and a dependency edit changes it."""
    import shutil

    from packaging.requirements import Requirement

    from egrpo import envlock

    assert envlock.problems(ROOT) == [], "stale: run `python -m egrpo.envlock` in the tested environment"
    pins = locked()
    for r in map(Requirement, envlock.requirements(ROOT)):
        assert _name(r.name) in pins and r.specifier.contains(pins[_name(r.name)], prereleases=True), (r, pins.get(_name(r.name)))
    assert envlock.env_digest(ROOT) == envlock.digest(ROOT) and envlock.digest(ROOT) in ENV.read_text()
    copy = tmp_path / "checkout"
    (copy / "workflow" / "envs").mkdir(parents=True)
    for f in ("pyproject.toml", "workflow/envs/egrpo.yaml", "workflow/envs/egrpo.lock.txt"):
        shutil.copy(ROOT / f, copy / f)
    text = (copy / "pyproject.toml").read_text()
    (copy / "pyproject.toml").write_text(text.replace('"pandas",', '"pandas>=2",', 1))
    assert envlock.digest(copy) != envlock.digest(ROOT) and envlock.problems(copy)  # an edit: a new env
    r = subprocess.run([sys.executable, "-m", "egrpo.envlock", "--check", "--root", str(copy)], capture_output=True,
                       text=True)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "python -m egrpo.envlock" in r.stderr
    subprocess.run([sys.executable, "-m", "egrpo.envlock", "--root", str(copy)], check=True, capture_output=True)
    assert envlock.problems(copy) == [] and envlock.env_digest(copy) != envlock.env_digest(ROOT)


def test_the_post_deploy_script_runs_in_a_fresh_environment(tmp_path):
    """The script's commands in a new venv that sees this environment's packages (no downloads of
    torch), from the checkout as Snakemake runs it: egrpo, its methods and the reward packages import,
    and pip installs no dependency of its own (the lock's constraints agree with this environment)."""
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
    # beside the venv's own pip and setuptools, pip installed the package alone: every dependency was
    # already here at the locked version (a mismatch would be installed from an index, or fail offline)
    own = {_name(p.name.split("-")[0]) for p in site.glob("*.dist-info")} - {"pip", "setuptools"}
    assert own <= {"egrpo", "hpsv2x", "image-reward"} and "egrpo" in own, own
    bad = subprocess.run(["bash", str(POST_DEPLOY)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "not the egrpo checkout" in bad.stderr  # run from elsewhere: a clear stop
