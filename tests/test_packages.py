"""The official reward packages installed with --no-deps: one pinned command everywhere it is given, and
their absence a one-line error naming it (not a traceback ending in ModuleNotFoundError)."""

import subprocess
import sys
from pathlib import Path

import pytest

from egrpo.rewards.packages import INSTALL

ROOT = Path(__file__).resolve().parents[1]


def test_the_install_command_is_the_same_everywhere():
    readme = (ROOT / "README.md").read_text()
    install = readme.split("## Install", 1)[1].split("```bash", 1)[1].split("```", 1)[0].strip()
    assert install.endswith(f"&& {INSTALL}") and '-e ".[test]"' in install  # one command: jobs, paper setup, tests
    assert install in (ROOT / ".ci" / "run").read_text().splitlines()  # CI installs with it, verbatim
    assert INSTALL.replace("pip", "python -m pip", 1) in (ROOT / "workflow/envs/egrpo.post-deploy.sh").read_text()


@pytest.mark.parametrize("module,dist", [("hpsv2", "hpsv2x"), ("ImageReward", "image-reward")])
def test_a_missing_reward_package_is_one_line_naming_the_command(tmp_path, module, dist):
    """`egrpo stand-ins` (the README's first step for the paper's setup) without one of the packages."""
    code = (f"import sys; sys.modules[{module!r}] = None\n"  # as if not installed
            f"from egrpo.cli import main; sys.exit(main(['stand-ins', {str(tmp_path / 's')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
    assert lines[0] == (f"egrpo: error: the official reward package {dist} is not installed (module {module}): "
                        f"{INSTALL}")
