"""The lock of the rule environment: the exact version of every distribution `pip install -e ".[test]"`
installs, read from the environment the tests ran in. `python -m egrpo.envlock` writes it; `--check`
exits 1 with one line when it, or the digest in the rule environment's file, is stale.

workflow/envs/egrpo.lock.txt is a pip constraints file (`name==version`, with the platform marker under
which a dependency is needed: torch's CUDA wheels on Linux x86-64). The README's install command, CI and
the rule environment's post-deploy script all install with `-c` it. Snakemake names a conda environment
by a hash of its file and post-deploy script only, so workflow/envs/egrpo.yaml carries a digest of
pyproject.toml's dependencies and of the lock: a dependency change changes the env file, and
`--use-conda` builds a new environment.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import re
import sys
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCK = Path("workflow/envs/egrpo.lock.txt")
ENV = Path("workflow/envs/egrpo.yaml")
EXTRAS = ("test",)  # the lock also fixes what the test command installs, so CI runs the locked versions
DIGEST_LINE = re.compile(r"^# lock digest: ([0-9a-f]{16}) ", re.M)
HEADER = ("# pip constraints of the rule environment, the README's install and CI (one line per distribution).\n"
          "# Written by `python -m egrpo.envlock` from the environment the tests passed in: {platform}, Python\n"
          "# {python}. Markers keep platform-only dependencies (torch's CUDA wheels) off other platforms.\n")


def requirements(root: Path) -> list[str]:
    """pyproject.toml's dependencies and those of the extras in EXTRAS, as written."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"]) + [r for e in EXTRAS for r in project["optional-dependencies"][e]]


def _applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**default_environment(), "extra": e}) for e in (extras or {""}))


def _platform_marker(req: Requirement) -> str | None:
    """The requirement's marker unless it only names extras (those are resolved while walking)."""
    return None if req.marker is None or "extra" in str(req.marker) else str(req.marker)


def closure(roots: list[str]) -> dict[str, tuple[str, str | None]]:
    """name -> (installed version, marker or None) of every distribution the requirements pull in here.
    A distribution reached only under a platform marker keeps it; reached unconditionally, it has none."""
    pins: dict[str, tuple[str, str | None]] = {}
    todo = [(Requirement(r), None) for r in roots]
    seen: set[tuple[str, frozenset, str | None]] = set()
    while todo:
        req, marker = todo.pop()
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras), marker)
        if key in seen or name == "egrpo":
            continue
        seen.add(key)
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            raise SystemExit(f"egrpo.envlock: {req.name} (required) is not installed here: lock from the tested "
                             "environment") from None
        if name in pins and pins[name][1] is None:
            marker = None
        elif name in pins and marker is not None and marker != pins[name][1]:
            marker = f"({pins[name][1]}) or ({marker})"
        pins[name] = (dist.version, marker)
        for child in map(Requirement, dist.requires or []):
            if _applies(child, set(req.extras)):
                todo.append((child, _platform_marker(child) or marker))
    return pins


def lock_text(root: Path) -> str:
    """The lock as written from this environment."""
    env = default_environment()
    lines = [f"{name}=={version}" + (f" ; {marker}" if marker else "")
             for name, (version, marker) in sorted(closure(requirements(root)).items())]
    return HEADER.format(platform=f"{env['sys_platform']} {env['platform_machine']}",
                         python=env["python_version"]) + "\n".join(lines) + "\n"


def digest(root: Path) -> str:
    """sha256 (16 hex) of pyproject's dependencies (with EXTRAS) and of the lock file's bytes."""
    h = hashlib.sha256(json.dumps(requirements(root)).encode())
    h.update((root / LOCK).read_bytes())
    return h.hexdigest()[:16]


def env_digest(root: Path) -> str | None:
    """The digest the rule environment's file carries."""
    m = DIGEST_LINE.search((root / ENV).read_text())
    return m[1] if m else None


def problems(root: Path) -> list[str]:
    """Why the lock or the env file's digest is stale (empty when both agree with this environment)."""
    out = []
    if not (root / LOCK).exists() or (root / LOCK).read_text() != lock_text(root):
        out.append(f"{LOCK} does not match this environment's versions of pyproject.toml's dependencies")
    elif env_digest(root) != digest(root):
        out.append(f"{ENV}'s lock digest is {env_digest(root)}, the dependencies' and the lock's is {digest(root)}")
    return out


def write(root: Path) -> None:
    (root / LOCK).write_text(lock_text(root))
    text = (root / ENV).read_text()
    line = f"# lock digest: {digest(root)} (pyproject.toml's dependencies + {LOCK.name}; python -m egrpo.envlock)"
    if not DIGEST_LINE.search(text):
        raise SystemExit(f"egrpo.envlock: {ENV} has no '# lock digest: ' line to update")
    (root / ENV).write_text(re.sub(r"^# lock digest: .*$", line, text, count=1, flags=re.M))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m egrpo.envlock", description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the lock or the env file's digest is stale")
    p.add_argument("--root", type=Path, default=Path("."), help="the checkout (default: .)")
    args = p.parse_args(argv)
    if args.check:
        issues = problems(args.root)
        for line in issues:
            print(f"egrpo.envlock: {line}; run `python -m egrpo.envlock` in the tested environment", file=sys.stderr)
        return 1 if issues else 0
    write(args.root)
    print(f"wrote {LOCK} and the digest in {ENV}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
