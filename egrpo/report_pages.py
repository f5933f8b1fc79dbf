"""The report's pages as self-contained HTML: each table with its notes, every claim (comparisons.csv),
the run configs and the runs' provenance. Snakemake's HTML report shows an HTML file inline (in a
frame) and offers Markdown or CSV only as a download, so these are what `snakemake --report` registers."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from .compare import flatten

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:1em 1.4em;color:#1e293b}
h1{font-size:1.25em}h2{font-size:1.05em;margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0}
th,td{border:1px solid #cbd5e1;padding:.25em .6em;text-align:right;vertical-align:top}
th{background:#dfe6ee}th:first-child,td:first-child{text-align:left}tr:nth-child(even) td{background:#f8fafc}
table.fields td{text-align:left}table.results td,table.claims td{white-space:nowrap}li{margin:.25em 0}
pre{background:#f8fafc;border:1px solid #e2e8f0;padding:.6em;font-size:12px;overflow:auto}"""


# the claims page's first columns: the claim, its difference and intervals, the verdicts
CLAIM_COLUMNS = ["table", "claim", "a", "b", "metric", "verdict", "delta", "lo_holm", "hi_holm", "lo", "hi", "verdict_95"]


def page(title: str, *parts: str) -> str:
    """An HTML document: the title as heading, then `parts` (HTML fragments)."""
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def table(df: pd.DataFrame, classes: str | None = None) -> str:
    blank = df.astype(object).where(df.notna(), "")  # a missing value (NaN or None) as an empty cell
    return blank.to_html(index=False, border=0, escape=True, classes=classes)


def notes(lines: Iterable[object]) -> str:
    items = "".join(f"<li>{html.escape(str(line))}</li>" for line in lines)
    return f"<ul>{items}</ul>" if items else ""


def table_page(title: str, disp: pd.DataFrame, lines: Iterable[object]) -> str:
    """A table as the Markdown file shows it: the display table, then its notes and claims."""
    return page(title, table(disp, "results"), notes(lines))


def comparisons_page(claims: pd.DataFrame) -> str:
    """comparisons.csv: every claim of the tables with its intervals and verdicts, one table per table."""
    parts = [f"<p>{len(claims)} claims; each decided with the other claims of its table (Holm), on the "
             "Holm-adjusted interval [lo_holm, hi_holm].</p>"]
    first = [c for c in CLAIM_COLUMNS if c in claims]
    claims = claims[first + [c for c in claims if c not in first]]
    for name, group in claims.groupby("table", sort=False):
        parts += [f"<h2>{html.escape(str(name))}</h2>", table(group.drop(columns="table"), "claims")]
    return page("Comparisons: every claim of the tables", *parts)


def records_page(title: str, intro: str, records: Mapping[str, Mapping], whole: Mapping | None = None) -> str:
    """Records of several runs (run configs, provenance): the fields they share once, then a table of
    the fields that differ, one row per run; `whole`, if given, printed in full below (the experiment's
    config)."""
    flat = {name: flatten(r) for name, r in records.items()}
    keys = list(dict.fromkeys(k for r in flat.values() for k in r))
    same = [k for k in keys if len({json.dumps(r.get(k), sort_keys=True, default=str) for r in flat.values()}) == 1]
    differ = [k for k in keys if k not in same]
    first = next(iter(flat.values()), {})
    parts = [f"<p>{html.escape(intro)}</p>"]
    if differ:
        rows = pd.DataFrame([{"run": name, **{k: _cell(r, k) for k in differ}} for name, r in flat.items()])
        parts += [f"<h2>Fields that differ between the {len(flat)} runs</h2>", table(rows, "fields")]
    if same:
        parts += [f"<h2>Fields every run shares ({len(same)})</h2>",
                  table(pd.DataFrame({"field": same, "value": [_cell(first, k) for k in same]}), "fields")]
    if whole is not None:
        parts += ["<h2>The whole config</h2>", f"<pre>{html.escape(json.dumps(whole, indent=1, sort_keys=True))}</pre>"]
    return page(title, *parts)


def _cell(record: Mapping, key: str) -> str:
    """A field's value as written in the record (JSON: null, true, a list), blank where the record lacks it."""
    if key not in record:
        return ""
    return record[key] if isinstance(record[key], str) else json.dumps(record[key])


def write_run_pages(out_dir: Path, experiment: Path, run_configs: Mapping[str, Path],
                    provenance: Mapping[str, Path]) -> list[Path]:
    """configs.html (the experiment's config and every resolved run config) and provenance.html (every
    run's provenance.json), named by run."""
    read = {name: json.loads(Path(p).read_text()) for name, p in run_configs.items()}
    written = [Path(out_dir) / "configs.html", Path(out_dir) / "provenance.html"]
    written[0].write_text(records_page(
        "Run configs", f"The resolved run config of each (setting, method, variant) that trains ({len(read)}), as "
        f"its train job reads it (results/configs/), and the experiment's whole config.", read,
        whole=json.loads(Path(experiment).read_text())))
    written[1].write_text(records_page(
        "Provenance", "What each run recorded of its code, libraries, machine and seeds (provenance.json beside "
        "its weights).", {name: json.loads(Path(p).read_text()) for name, p in provenance.items()}))
    return written
