"""LICENSE (Apache-2.0) stays compatible with what the package depends on: every direct dependency and
both --no-deps reward packages declare a permissive license (a copyleft or non-commercial one fails)."""

import importlib.metadata as md
import re
import tomllib
from pathlib import Path

from egrpo.rewards.packages import NO_DEPS

ROOT = Path(__file__).resolve().parents[1]
PERMISSIVE = re.compile(r"apache|\bmit\b|bsd|\bisc\b|python software foundation|\bpsf\b|mpl-2\.0|mozilla public "
                        r"license 2\.0|zlib|cc0|bsl-1\.0|hpnd|matplotlib", re.I)
RESTRICTIVE = re.compile(r"\b(a|l)?gpl|general public|non-?commercial|academic", re.I)


def _license(dist: str) -> str:
    meta = md.metadata(dist)
    classifiers = [c for c in meta.get_all("Classifier") or [] if c.startswith("License")]
    return " ".join([meta.get("License-Expression") or "", (meta.get("License") or "")[:300], *classifiers])


def test_the_license_is_apache_and_every_dependency_permissive():
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License\n                           Version 2.0")
    assert "Apache-2.0 (`LICENSE`)" in (ROOT / "README.md").read_text()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.split(r"[<>=!\[; ]", d, maxsplit=1)[0] for d in [*deps, *NO_DEPS]]
    bad = {n: _license(n) for n in names if not PERMISSIVE.search(_license(n)) or RESTRICTIVE.search(_license(n))}
    assert not bad, f"dependencies whose license is not known compatible with Apache-2.0: {bad}"
