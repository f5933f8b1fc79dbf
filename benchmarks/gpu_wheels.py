"""Wheels for a GPU machine that reaches no package registry: everything the GPU checks import beyond the
CUDA image's own torch, at the versions of this environment (the ones CI tests), for the machine's Python
and platform, into .whl/ (git-ignored). One command, on a machine with a registry:

    python benchmarks/gpu_wheels.py [--python-version 3.12] [--without pandas ...] [--dest .whl]

On the GPU machine, in the tree's root: `python3 -m pip install --no-index --no-deps --target .site .whl/*.whl`,
then run with PYTHONPATH=$PWD/.site (benchmarks/README.md, "GPU check"). torch and its CUDA libraries are
gigabytes and cannot travel: the image must have them. What travels with the tree is limited (64 MiB on
the device machines here): the script prints the total and stops when it does not fit.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# what the GPU checks import (gpu_fsdp.py's preflight lists the same modules; peft: gpu_flux.py's LoRA)
NEEDED = ("diffusers", "transformers", "tokenizers", "safetensors", "huggingface-hub", "pydantic", "pyyaml",
          "pandas", "tqdm", "peft")
# in a CUDA image with torch: torch and what it requires (see `image`), and these
IMAGE = {"numpy", "pillow", "pip", "wheel"}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(names, skip: set[str]) -> dict[str, str]:
    """Installed distributions `names` need (their unconditional requirements, transitively): name -> version."""
    from packaging.requirements import Requirement

    found, stack = {}, list(names)
    while stack:
        name = stack.pop()
        if key(name) in found or key(name) in skip:
            continue
        dist = md.distribution(name)
        found[key(name)] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                stack.append(req.name)
    return found


def image() -> set[str]:
    """Distributions a CUDA image with torch has: torch's own requirements, transitively, and IMAGE."""
    return set(closure(["torch"], set())) | IMAGE


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--python-version", default="3.12", help="the GPU machine's Python (preflight reports it)")
    p.add_argument("--dest", default=str(ROOT / ".whl"))
    p.add_argument("--without", nargs="*", default=[], help="distributions the image already has")
    p.add_argument("--limit-mib", type=float, default=64.0, help="what may travel with the tree, tree included")
    args = p.parse_args()
    pins = closure(NEEDED, image() | {key(n) for n in args.without})
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [f"--platform={x}" for x in PLATFORMS]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(dest),
           f"--python-version={args.python_version}", *platforms, *(f"{n}=={v}" for n, v in sorted(pins.items()))]
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob("*.whl"))
    tree = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    tree_bytes = sum((ROOT / f).stat().st_size for f in tree.split("\0") if f and (ROOT / f).is_file())
    size = sum(w.stat().st_size for w in wheels)
    print(f"{len(wheels)} wheels, {size / 2**20:.1f} MiB, for Python {args.python_version}, in {dest}; the tree "
          f"{tree_bytes / 2**20:.1f} MiB; together {(size + tree_bytes) / 2**20:.1f} of {args.limit_mib:.0f} MiB")
    for w in sorted(wheels, key=lambda w: -w.stat().st_size)[:8]:
        print(f"  {w.stat().st_size / 2**20:6.1f} MiB  {w.name}")
    if size + tree_bytes > args.limit_mib * 2**20:
        raise SystemExit("too large to travel: leave out what the image has (--without NAME ...), e.g. pandas")


if __name__ == "__main__":
    main()
