"""The method registry: this repository's methods are found on disk, so a plain checkout that was never
pip-installed (what reaches a GPU machine) runs `python -m egrpo` with every method."""

import subprocess

from egrpo.methods import in_repo_modules, registry

CHECK = """
import importlib.metadata as md, json, egrpo
from egrpo.methods import in_repo_modules, registry
print(json.dumps({"file": egrpo.__file__, "entry_points": len(md.entry_points(group="egrpo.methods")),
                  "methods": sorted(registry())}))
"""


def test_every_module_of_baselines_is_discovered():
    modules = in_repo_modules()
    assert modules[0] == "egrpo.plans" and {"baselines.dancegrpo", "baselines.mixgrpo", "baselines.flowgrpo"} <= set(modules)
    assert {"egrpo", "dancegrpo", "mixgrpo", "mixgrpo_flash", "flowgrpo"} <= set(registry())


def test_a_checkout_that_was_never_installed_runs_egrpo(bare_checkout):
    import json

    python, tree = bare_checkout
    r = subprocess.run([str(python), "-c", CHECK], cwd=tree, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    found = json.loads(r.stdout.splitlines()[-1])
    assert found["file"].startswith(str(tree)) and found["entry_points"] == 0  # genuinely not installed
    assert {"egrpo", "dancegrpo", "mixgrpo", "flowgrpo"} <= set(found["methods"])
    r = subprocess.run([str(python), "-m", "egrpo", "--help"], cwd=tree, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "train" in r.stdout, r.stderr[-3000:]
    r = subprocess.run([str(python), "-m", "egrpo", "train", "--help"], cwd=tree, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "dancegrpo" in r.stdout, r.stderr[-3000:]
