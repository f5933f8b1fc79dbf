import os
import re
import tempfile

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# file digests (egrpo.digest) are cached here, not in the user's cache; subprocesses inherit it
os.environ.setdefault("EGRPO_CACHE", tempfile.mkdtemp(prefix="egrpo-test-cache-"))
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory):
    """A tiny FLUX-format pipeline written offline once per test session."""
    from egrpo.tiny_flux import save_tiny_flux

    return save_tiny_flux(tmp_path_factory.mktemp("tiny_flux"))


@pytest.fixture(scope="session")
def backbone(tiny_flux_dir):
    from egrpo.flux import FluxBackbone

    return FluxBackbone.from_pretrained(tiny_flux_dir)


def tiny_run_config(model_dir, method: str, **sections) -> dict:
    """A raw config for the tiny model: 32x32 images, 8 steps, groups of 4, two prompts an iteration."""
    raw = {
        "name": "test",
        "model": {"path": str(model_dir), "height": 32, "width": 32, "max_sequence_length": 16},
        "train": {"prompts": ["a red circle", "a blue square", "a green star", "a cat"], "iterations": 4,
                  "prompts_per_iteration": 2, "checkpoint_every": 2},
        "optim": {"lr": 3e-2},
        "rewards": {"names": ["brightness"]},
        "method": {"num_steps": 8, "group_size": 4},
    }
    if method in ("egrpo", "g2rpo"):
        raw["method"].update(active="first4", granularities=[1])
    if method == "branchgrpo":
        raw["method"].update(split_points=[0, 3])  # 4 leaves
    for k, v in sections.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return raw


@pytest.fixture(scope="session")
def bare_checkout(tmp_path_factory):
    """(python, tree): a copy of this checkout that was never pip-installed, and a Python that has the
    project's dependencies but no egrpo: a new venv whose site-packages links every package of this
    one except egrpo's own install (its dist-info with the entry points, its editable finder), as on a
    machine that received the tree and a folder of wheels. Run `python -m egrpo` with cwd=tree."""
    import shutil
    import subprocess
    import sys
    import sysconfig
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    base = tmp_path_factory.mktemp("bare")
    tree = base / "tree"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=root,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        if (root / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, tree / name)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    parent = Path(sysconfig.get_paths()["purelib"])
    for entry in parent.iterdir():
        if entry.name.startswith(("egrpo-", "__editable__", "__editable___egrpo")) or entry.name == "__pycache__":
            continue
        (site / entry.name).symlink_to(entry)
    return venv / "bin" / "python", tree


def html_tables(text: str) -> list[list[list[str]]]:
    """Every <table> of an HTML page as rows of cell texts (header row first), by the standard parser."""
    from html.parser import HTMLParser

    class Tables(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tables, self.cell = [], None

        def handle_starttag(self, tag, attrs):
            if tag == "table":
                self.tables.append([])
            elif tag == "tr":
                self.tables[-1].append([])
            elif tag in ("td", "th"):
                self.cell = []

        def handle_endtag(self, tag):
            if tag in ("td", "th"):
                self.tables[-1][-1].append("".join(self.cell).strip())
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell.append(data)

    parser = Tables()
    parser.feed(text)
    return parser.tables


def markdown_table(text: str) -> list[list[str]]:
    """The first Markdown table of a text as rows of cell texts (header first, the rule line dropped)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for k, line in enumerate(lines) if k != 1]


def job_counts(output: str) -> dict[str, int]:
    """Jobs per rule from the "Job stats:" table of a `snakemake -n` output (empty without one)."""
    if "Job stats:" not in output:
        return {}
    table = output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}
