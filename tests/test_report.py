"""Tables from evaluation CSVs and logs: labels and x-values follow the config, comparisons are paired;
each table, the claims and the runs' records as the HTML pages the report shows."""

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import html_tables, markdown_table
from egrpo import paper
from egrpo.experiment import Experiment
from egrpo.report import Tables, render
from egrpo.report_pages import records_page

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["hps", "clip", "pickscore", "imagereward"]


def _experiment(tau: float, **ablations) -> Experiment:
    cfg = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())
    cfg["training"]["methods"]["egrpo"]["method"]["tau"] = tau
    cfg["ablations"] = {"setting": "hps", "methods": {"egrpo": {
        "tau": [t for t in (0, 2.0, 2.2, 2.6) if t != tau], "fixed_merge": [2], "active": ["all"]}, **ablations}}
    cfg["compare_paper"] = True
    return Experiment.load(cfg)


def _write_runs(exp: Experiment, tmp: Path, effect: dict) -> tuple[dict, Path, dict]:
    """Per-image CSVs (8 prompts) and logs for every run; `effect` shifts a (method, variant)'s scores."""
    rng = np.random.default_rng(0)
    prompt_effect = rng.normal(0, 0.05, 8)
    evals, logs = {}, {}
    for run in exp.runs:
        shift = effect.get((run.method, run.variant), 0.0) + 0.001 * run.seed
        df = pd.DataFrame({"prompt_index": range(8), "prompt": ["p"] * 8, "seed": range(8),
                           **{m: 0.5 + prompt_effect + shift + rng.normal(0, 0.001, 8) for m in METRICS}})
        evals[run] = tmp / f"{run.dir.replace('/', '_')}.csv"
        df.to_csv(evals[run], index=False)
        rows = [{"iteration": k, "passes/sampling": 100, "passes/training": 10, "time/total": 1.0,
                 f"probe/world_preference/prompts": [0.5 + 0.01 * k + shift] * 2} for k in range(4)]
        logs[run] = tmp / f"{run.dir.replace('/', '_')}.jsonl"
        logs[run].write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = tmp / "base.csv"
    pd.DataFrame({"prompt_index": range(8), "prompt": ["p"] * 8, "seed": range(8),
                  **{m: 0.5 + prompt_effect for m in METRICS}}).to_csv(base, index=False)
    return evals, base, logs


@pytest.mark.parametrize("tau", [2.2, 2.0])
def test_changing_the_main_tau_relabels_every_table(tmp_path, tau):
    exp = _experiment(tau)
    evals, base, logs = _write_runs(exp, tmp_path, {})
    Tables(exp, evals, base, logs).write_all(tmp_path / "tables")
    t4 = pd.read_csv(tmp_path / "tables" / "table4_tau.csv")
    main = t4[t4.row.str.endswith("(main)")]
    assert list(main.row) == [f"tau = {tau:.1f} (main)"] and float(main.x.iloc[0]) == tau
    assert float(main.hps_paper.iloc[0]) == paper.TABLE4[tau]["hps"]  # the paper's row of the main's own tau
    assert sorted(t4.x.astype(float)) == sorted([0, 2.0, 2.2, 2.6])
    for stem in ("table2_merge", "table3_steps"):
        assert (pd.read_csv(tmp_path / "tables" / f"{stem}.csv").row.str.endswith("(main)")).sum() == 1
    t3 = pd.read_csv(tmp_path / "tables" / "table3_steps.csv")
    assert list(t3.row) == ["first 4 steps (main)", "all steps"]  # the main's own trained steps, from its config


def test_a_method_with_ablations_of_its_own_gets_its_table(tmp_path):
    """Ablations are data: DanceGRPO's noise level ablated gives its own table (main row labelled from
    its resolved config, rows in numeric order) and claims, beside E-GRPO's Tables 2-4."""
    exp = _experiment(2.2, dancegrpo={"eta": [0.5, 0.1]})
    evals, base, logs = _write_runs(exp, tmp_path, {("dancegrpo", "eta-0.1"): -0.02})
    Tables(exp, evals, base, logs).write_all(tmp_path / "tables")
    table = pd.read_csv(tmp_path / "tables" / "ablation_dancegrpo_eta.csv")
    assert list(table.row) == ["eta = 0.1", "eta = 0.3 (main)", "eta = 0.5"] and list(table.x) == [0.1, 0.3, 0.5]
    comp = pd.read_csv(tmp_path / "tables" / "comparisons.csv")
    claims = comp[comp.table == "ablation_dancegrpo_eta"]
    assert list(claims.b) == ["eta = 0.1", "eta = 0.5"] and (claims.a == "eta = 0.3 (main)").all()
    assert (tmp_path / "tables" / "table4_tau.md").exists()


def test_comparisons_pair_by_seed_and_prompt(tmp_path):
    """A method 0.02 above the base on every prompt resolves its gain although the prompts spread the
    scores by 0.05: the prompt effect cancels in the pairs."""
    exp = _experiment(2.2)
    evals, base, logs = _write_runs(exp, tmp_path, {("egrpo", "main"): 0.02, ("mixgrpo", "main"): 0.02})
    tables = Tables(exp, evals, base, logs)
    tables.write_all(tmp_path / "tables")
    comp = pd.read_csv(tmp_path / "tables" / "comparisons.csv")
    gain = comp[(comp.claim == "gain over the base model") & (comp.a == "E-GRPO")].iloc[0]
    assert gain.verdict_95 == "holds (resolved)" and 0 < gain.lo < gain.delta < gain.hi and abs(gain.delta - 0.0205) < 1e-3
    assert gain.seeds_to_resolve == 2  # resolved at 95% already; the projection agrees
    # decided with its table's 7 claims on two seeds (t of 1 degree of freedom at 0.05 / 7 is 89), it is not
    assert gain.family == 7 and gain.lo_holm < 0 < gain.hi_holm and gain.verdict.endswith("over 7 claims, Holm)")
    tie = comp[(comp.claim == "paper's ordering") & (comp.a == "E-GRPO") & (comp.b == "MixGRPO")].iloc[0]
    assert tie.verdict.startswith("not resolved")
    md = (tmp_path / "tables" / "table1_hps.md").read_text()
    assert "paper's ordering on hps, E-GRPO > MixGRPO > DanceGRPO > Base model: not resolved" in md
    assert (f"Δ {gain.delta:+.4f} [{gain.lo:+.4f}, {gain.hi:+.4f}] at 95%, "
            f"[{gain.lo_holm:+.4f}, {gain.hi_holm:+.4f}] Holm-adjusted (7 claims)") in md


def test_power_table_projects_seeds_from_the_measured_variance(tmp_path):
    """egrpo.power lists every paired claim of the tables with the seeds its bar needs: a large,
    clean gain meets a 5x bar with the seeds at hand, and a null difference is bounded."""
    from egrpo.power import power_table

    exp = _experiment(2.2)
    evals, base, logs = _write_runs(exp, tmp_path, {("egrpo", "main"): 0.02, ("mixgrpo", "main"): 0.02,
                                                    ("dancegrpo", "main"): 0.02})
    text = power_table(Tables(exp, evals, base, logs))
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| table1_hps | ")]
    gains = [r for r in rows if "> Base model" in r[1]]
    assert len(gains) == 3 and all(r[5].startswith("gain ≥ 5 x") and int(r[6].rstrip(" |")) <= 4 for r in gains)
    assert all(float(r[4]) < float(r[3]) for r in rows)  # more seeds leave only the prompts' part
    tie = next(r for r in rows if r[1] == "E-GRPO > MixGRPO")
    assert tie[5].startswith("resolved, or |Δ| < ") and int(tie[6].rstrip(" |")) <= 4
    assert "mean gain over the base: 0.02" in text
    wide = power_table(Tables(exp, evals, base, logs), prompts=[288])  # a 4x larger test set: never more seeds
    assert "| seeds for the bar (288 prompts) |" in wide
    rows = [line.rstrip(" |").split(" | ") for line in wide.splitlines() if line.startswith("| table1_hps | ")]
    assert len(rows) == 5 and all(int(r[7]) <= int(r[6]) for r in rows), rows


def test_each_table_is_an_html_page_with_the_markdown_cells_and_notes(tmp_path):
    """What the HTML report shows inline: each table's cells as its Markdown has them, each note, and
    every claim of comparisons.csv on its own page."""
    exp = _experiment(2.2)
    evals, base, logs = _write_runs(exp, tmp_path, {("egrpo", "main"): 0.02})
    written = Tables(exp, evals, base, logs).write_all(tmp_path / "tables")
    assert [p.stem for p in written] == ["table1_hps", "table1_hps_clip", "table2_merge", "table3_steps", "table4_tau"]
    for md in written:
        text, page = md.read_text(), md.with_suffix(".html").read_text()
        (cells,) = html_tables(page)
        disp = render(pd.read_csv(md.with_suffix(".csv")), METRICS, exp.compare_paper)
        assert cells == [list(disp.columns)] + disp.fillna("").astype(str).values.tolist(), md.stem
        assert markdown_table(text) == cells, md.stem  # the Markdown's cells as shown, signs included
        for note in (line[2:] for line in text.splitlines() if line.startswith("- ")):
            assert f"<li>{html.escape(note)}</li>" in page, (md.stem, note)
        assert f"<h1>{html.escape(text.splitlines()[0][2:])}</h1>" in page
    comp = pd.read_csv(tmp_path / "tables" / "comparisons.csv")
    tables = html_tables((tmp_path / "tables" / "comparisons.html").read_text())
    assert len(tables) == comp.table.nunique() and sum(len(t) - 1 for t in tables) == len(comp)
    column = tables[0][0].index("verdict")
    assert [row[column] for t in tables for row in t[1:]] == list(comp.verdict) and comp.verdict.str.len().min() > 0


def test_a_records_page_lists_shared_fields_once_and_differing_fields_per_run():
    page = records_page("Provenance", "intro", {
        "hps/egrpo/main/seed0": {"git_commit": "abc", "versions": {"torch": "2.14"}, "seed": 0, "key": ["w", 0]},
        "hps/egrpo/main/seed1": {"git_commit": "abc", "versions": {"torch": "2.14"}, "seed": 1, "key": ["w", 1]}})
    differ, same = html_tables(page)
    assert differ == [["run", "seed", "key"], ["hps/egrpo/main/seed0", "0", '["w", 0]'],
                      ["hps/egrpo/main/seed1", "1", '["w", 1]']]
    assert same == [["field", "value"], ["git_commit", "abc"], ["versions.torch", "2.14"]]
