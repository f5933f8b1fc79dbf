"""Two results folders side by side (two machines, a rerun, a cluster run against a local one).

Every number of every table (`tables/*.csv`) and every claim (`tables/comparisons.csv`) gets one
status, from best to worst:

- identical: the same stored value (and the same interval);
- identical as printed: differs only past the digits the tables print;
- within the intervals: each folder's value lies inside the other's 95% interval;
- beyond the intervals: at least one does not;
- different: a value without an interval (transformer passes, seeds) differs.

A claim also reports whether its verdict (holds, reversed, not resolved) changed. The provenance files of both folders (every run's
provenance.json, the world's world.json and pretrain.json, the evaluations' *.provenance.json) are
compared field by field, so a difference in the numbers can be traced to the machine (CPU model, kernel
instruction set, MKL mode, threads, GPU stack) or to the code (git commit, package versions).
Deciding claims afresh (egrpo.verdicts.side_by_side re-reads two comparisons.csv with their chance of
replicating) is not this module's job; it reads what two runs wrote, tables and provenance included.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .verdicts import KEY, outcome

IDENTICAL, PRINTED, WITHIN, BEYOND, DIFFERENT = (
    "identical", "identical as printed", "within the intervals", "beyond the intervals", "different")
ONLY_A, ONLY_B = "only in A", "only in B"
STATUSES = (IDENTICAL, PRINTED, WITHIN, BEYOND, DIFFERENT, ONLY_A, ONLY_B)
RANK = {IDENTICAL: 0, PRINTED: 1, WITHIN: 2, BEYOND: 3, DIFFERENT: 3, ONLY_A: 3, ONLY_B: 3}
DIGITS = 4  # what egrpo.report prints of a mean, a half-width or a difference
# table columns that are not results of the reproduction: timing, and values derived from others
UNCOMPARED = re.compile(r"^(wall_s|.*_paper|.*_diff|x)$")
# provenance fields that differ on every run (timings)
TIMING = re.compile(r"(^|\.)(\w+_seconds|time/\w+)$")
GAIN = re.compile(r"^\s*([+-]?[\d.]+(?:e[+-]?\d+)?)\s*\[\s*([+-]?[\d.]+(?:e[+-]?\d+)?),\s*([+-]?[\d.]+(?:e[+-]?\d+)?)\s*\]\s*$")


def status(a: float, b: float, half_a: float | None = None, half_b: float | None = None) -> str:
    """One number (with its 95% half-width, if it has one) from two folders."""
    same_half = half_a == half_b or (half_a is not None and half_b is not None and
                                     math.isnan(half_a) and math.isnan(half_b))
    if (a == b or (math.isnan(a) and math.isnan(b))) and same_half:
        return IDENTICAL
    if _printed(a) == _printed(b) and (half_a is None or _printed(half_a) == _printed(half_b)):
        return PRINTED
    if half_a is None or half_b is None:
        return DIFFERENT
    return WITHIN if abs(a - b) <= min(half_a, half_b) else BEYOND


def _printed(v: float) -> str:
    return f"{v:+.{DIGITS}f}"


def worst(statuses) -> str:
    return max(statuses, key=RANK.__getitem__, default=IDENTICAL)


# ---- folders ----------------------------------------------------------------------------------
def results_dir(path: str | Path) -> Path:
    """The results folder itself, given it or a checkout that holds `results/`."""
    path = Path(path)
    if not (path / "tables").is_dir() and (path / "results" / "tables").is_dir():
        path = path / "results"
    if not (path / "tables").is_dir():
        from .errors import InputError

        raise InputError(f"{path} is not a results folder: it has no tables/ (give the folder the DAG writes, "
                         "results/, or the checkout that holds it)")
    return path


def provenance_files(root: Path) -> dict[str, dict]:
    """relative path -> the provenance recorded there (a run's provenance.json whole; the world's and the
    evaluations' metadata files whole, their provenance included)."""
    patterns = ("runs/**/provenance.json", "world/**/world.json", "world/**/pretrain.json", "eval/**/*.provenance.json")
    out = {}
    for pattern in patterns:
        for p in sorted(root.glob(pattern)):
            out[str(p.relative_to(root))] = json.loads(p.read_text())
    return out


def flatten(obj, prefix: str = "") -> dict[str, object]:
    """Nested dicts to dotted keys; lists stay whole values."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): obj}


# ---- the comparison ---------------------------------------------------------------------------
@dataclass
class FolderComparison:
    """What `compare_folders` found; `report()` renders it, `frame()` is one long table of it."""

    a: Path
    b: Path
    cells: pd.DataFrame  # table, row, column, a, b, half_a, half_b, status
    claims: pd.DataFrame  # table, claim, metric, a_label, b_label, delta_a, delta_b, verdict_a, verdict_b, status
    provenance: pd.DataFrame  # field, a, b, files
    only: list[tuple[str, str]] = field(default_factory=list)  # (file, ONLY_A | ONLY_B)

    @property
    def overall(self) -> str:
        return worst(list(self.cells["status"]) + list(self.claims["status"]) + [s for _, s in self.only])

    def frame(self) -> pd.DataFrame:
        """Every comparison as rows of (section, item, a, b, status)."""
        rows = [{"section": "table", "item": f"{r.table} | {r.row} | {r.column}", "a": r.a, "b": r.b, "status": r.status}
                for r in self.cells.itertuples()]
        rows += [{"section": "claim", "item": f"{r.table} | {r.claim}: {r.a_label} > {r.b_label} on {r.metric}",
                  "a": f"{r.delta_a} ({r.verdict_a})", "b": f"{r.delta_b} ({r.verdict_b})", "status": r.status}
                 for r in self.claims.itertuples()]
        rows += [{"section": "provenance", "item": r.field, "a": r.a, "b": r.b, "status": f"differs in {r.files} file(s)"}
                 for r in self.provenance.itertuples()]
        rows += [{"section": "file", "item": f, "a": "", "b": "", "status": s} for f, s in self.only]
        return pd.DataFrame(rows, columns=["section", "item", "a", "b", "status"])

    def report(self, max_rows: int = 12) -> str:
        lines = [f"# {self.a} (A) against {self.b} (B): {self.overall}", ""]
        lines.append("## Tables")
        for table, cells in self.cells.groupby("table", sort=False):
            counts = cells["status"].value_counts()
            lines.append(f"- {table}: {worst(cells['status'])} ("
                         + ", ".join(f"{counts[s]} {s}" for s in STATUSES if s in counts) + ")")
            for r in cells[cells["status"] != IDENTICAL].head(max_rows).itertuples():
                lines.append(f"  - {r.row} | {r.column}: A {_cell(r.a, r.half_a)}, B {_cell(r.b, r.half_b)}: {r.status}")
        lines += ["", "## Claims (comparisons.csv)"]
        if len(self.claims):
            counts = self.claims["status"].value_counts()
            lines.append("- " + ", ".join(f"{counts[s]} {s}" for s in STATUSES if s in counts))
            changed = self.claims[self.claims["verdict_a"].map(outcome) != self.claims["verdict_b"].map(outcome)]
            lines.append(f"- verdicts changed: {len(changed)}")
            for r in changed.head(max_rows).itertuples():
                lines.append(f"  - {r.table} | {r.a_label} > {r.b_label} on {r.metric}: A {r.verdict_a}, B {r.verdict_b}")
            for r in self.claims[(self.claims["status"] != IDENTICAL)
                                 & ~self.claims.index.isin(changed.index)].head(max_rows).itertuples():
                lines.append(f"  - {r.table} | {r.a_label} > {r.b_label} on {r.metric}: Δ A {r.delta_a:+.4f}, "
                             f"B {r.delta_b:+.4f}: {r.status}")
        lines += ["", "## Provenance fields that differ"]
        if len(self.provenance):
            lines += [f"- {r.field}: A {r.a!r}, B {r.b!r} ({r.files} file(s))" for r in self.provenance.itertuples()]
        else:
            lines.append("- none")
        if self.only:
            lines += ["", "## Files in one folder only"] + [f"- {f}: {s}" for f, s in self.only]
        return "\n".join(lines) + "\n"


def _cell(v, half) -> str:
    if isinstance(v, float) and half is not None and not math.isnan(half):
        return f"{v:.{DIGITS}f} ± {half:.{DIGITS}f}"
    if isinstance(v, float):
        return f"{v:,.0f}" if v.is_integer() else f"{v:.{DIGITS}f}"
    return str(v)


def compare_folders(a: str | Path, b: str | Path) -> FolderComparison:
    """Compare the tables, claims and provenance of two results folders (see the module docstring)."""
    a, b = results_dir(a), results_dir(b)
    only: list[tuple[str, str]] = []
    cells = []
    names_a = {p.name for p in (a / "tables").glob("*.csv") if p.name != "comparisons.csv"}
    names_b = {p.name for p in (b / "tables").glob("*.csv") if p.name != "comparisons.csv"}
    only += [(f"tables/{n}", ONLY_A) for n in sorted(names_a - names_b)]
    only += [(f"tables/{n}", ONLY_B) for n in sorted(names_b - names_a)]
    for name in sorted(names_a & names_b):
        cells += compare_table(pd.read_csv(a / "tables" / name), pd.read_csv(b / "tables" / name), name[:-4])
    claims = pd.DataFrame(columns=["table", "claim", "metric", "a_label", "b_label", "delta_a", "delta_b",
                                   "verdict_a", "verdict_b", "status"])
    ca, cb = a / "tables" / "comparisons.csv", b / "tables" / "comparisons.csv"
    if ca.is_file() and cb.is_file():
        claims, missing = compare_claims(pd.read_csv(ca), pd.read_csv(cb))
        only += missing
    elif ca.is_file() or cb.is_file():
        only.append(("tables/comparisons.csv", ONLY_A if ca.is_file() else ONLY_B))
    prov, missing = compare_provenance(provenance_files(a), provenance_files(b))
    only += missing
    cols = ["table", "row", "column", "a", "b", "half_a", "half_b", "status"]
    return FolderComparison(a, b, pd.DataFrame(cells, columns=cols), claims, prov, only)


def compare_table(ta: pd.DataFrame, tb: pd.DataFrame, name: str) -> list[dict]:
    """One table's cells, row by row (rows matched by label) and column by column."""
    out = []
    ia, ib = ta.set_index("row"), tb.set_index("row")
    for row in list(ia.index) + [r for r in ib.index if r not in ia.index]:
        if row not in ia.index or row not in ib.index:
            out.append({"table": name, "row": row, "column": "(row)", "a": None, "b": None, "half_a": None,
                        "half_b": None, "status": ONLY_B if row not in ia.index else ONLY_A})
            continue
        ra, rb = ia.loc[row], ib.loc[row]
        for col in [c for c in ia.columns if not c.endswith("_ci95") and not UNCOMPARED.match(c)]:
            if col not in ib.columns:
                out.append({"table": name, "row": row, "column": col, "a": ra[col], "b": None, "half_a": None,
                            "half_b": None, "status": ONLY_A})
                continue
            va, vb = ra[col], rb[col]
            if _blank(va) and _blank(vb):
                continue
            if _blank(va) or _blank(vb):
                out.append({"table": name, "row": row, "column": col, "a": va, "b": vb, "half_a": None,
                            "half_b": None, "status": ONLY_B if _blank(va) else ONLY_A})
                continue
            ha = hb = None
            if isinstance(va, str) or isinstance(vb, str):  # a paired difference: "Δ [lo, hi]"
                (va, ha), (vb, hb) = _gain(va), _gain(vb)
            elif f"{col}_ci95" in ia.columns and f"{col}_ci95" in ib.columns:
                ha, hb = float(ra[f"{col}_ci95"]), float(rb[f"{col}_ci95"])
            va, vb = float(va), float(vb)
            out.append({"table": name, "row": row, "column": col, "a": va, "b": vb, "half_a": ha, "half_b": hb,
                        "status": status(va, vb, ha, hb)})
    return out


def _blank(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def _gain(cell: str) -> tuple[float, float]:
    """'+0.0188 [-0.0390, +0.0767]' -> (0.0188, half-width 0.0579)."""
    m = GAIN.match(str(cell))
    if not m:
        raise ValueError(f"not a paired difference 'Δ [lo, hi]': {cell!r}")
    delta, lo, hi = map(float, m.groups())
    return delta, (hi - lo) / 2


def compare_claims(ca: pd.DataFrame, cb: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Each claim of comparisons.csv in both folders (matched as egrpo.verdicts matches two runs' claims):
    its Δ and 95% interval, and its verdict in each."""
    merged = ca.merge(cb, on=KEY, how="outer", suffixes=("_a", "_b"), indicator=True)
    rows, only = [], []
    for r in merged.to_dict("records"):
        label = f"tables/comparisons.csv: {r['table']} | {r['a']} > {r['b']} on {r['metric']} ({r['claim']})"
        if r["_merge"] != "both":
            only.append((label, ONLY_A if r["_merge"] == "left_only" else ONLY_B))
            continue
        ha, hb = (r["hi_a"] - r["lo_a"]) / 2, (r["hi_b"] - r["lo_b"]) / 2
        s = status(r["delta_a"], r["delta_b"], ha, hb)
        if s in (IDENTICAL, PRINTED) and (r["lo_a"], r["hi_a"]) != (r["lo_b"], r["hi_b"]):
            s = s if _printed(r["lo_a"]) + _printed(r["hi_a"]) == _printed(r["lo_b"]) + _printed(r["hi_b"]) else WITHIN
        rows.append({"table": r["table"], "claim": r["claim"], "metric": r["metric"], "a_label": r["a"],
                     "b_label": r["b"], "delta_a": r["delta_a"], "delta_b": r["delta_b"], "verdict_a": r["verdict_a"],
                     "verdict_b": r["verdict_b"], "status": s})
    return pd.DataFrame(rows, columns=["table", "claim", "metric", "a_label", "b_label", "delta_a", "delta_b",
                                       "verdict_a", "verdict_b", "status"]), only


def compare_provenance(pa: dict[str, dict], pb: dict[str, dict]) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Fields that differ between the provenance files both folders hold, counted over files (a field
    differing in every run's file is one row); timings are left out."""
    only = [(f, ONLY_A) for f in sorted(set(pa) - set(pb))] + [(f, ONLY_B) for f in sorted(set(pb) - set(pa))]
    diffs: dict[tuple[str, str, str], int] = {}
    for f in sorted(set(pa) & set(pb)):
        fa, fb = flatten(pa[f]), flatten(pb[f])
        for k in sorted(set(fa) | set(fb)):
            if TIMING.search(k):
                continue
            va, vb = fa.get(k, "(absent)"), fb.get(k, "(absent)")
            if va != vb:
                item = (k, json.dumps(va, sort_keys=True, default=str), json.dumps(vb, sort_keys=True, default=str))
                diffs[item] = diffs.get(item, 0) + 1
    rows = [{"field": k, "a": json.loads(va), "b": json.loads(vb), "files": n} for (k, va, vb), n in diffs.items()]
    return pd.DataFrame(rows, columns=["field", "a", "b", "files"]), only
