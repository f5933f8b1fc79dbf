"""egrpo.compare and `egrpo compare`: two synthetic results folders that differ in known ways (one cell
past the printed digits, one within the intervals, one beyond, a changed verdict, another CPU, a file in
one folder only) are told apart cell by cell, claim by claim and field by field."""

import json
from pathlib import Path

import pandas as pd
import pytest

from egrpo.cli import main
from egrpo.compare import (BEYOND, DIFFERENT, IDENTICAL, ONLY_A, ONLY_B, PRINTED, WITHIN, compare_folders,
                           status)
from egrpo.errors import InputError

TABLE1 = pd.DataFrame([
    {"row": "Base model", "seeds": 1, "hps": 0.7221, "hps_ci95": 0.0227, "clip": 0.7661, "clip_ci95": 0.0365},
    {"row": "E-GRPO", "seeds": 2, "hps": 0.7409, "hps_ci95": 0.0601, "clip": 0.7944, "clip_ci95": 0.0751,
     "gain_hps": "+0.0188 [-0.0390, +0.0767]", "passes": 24064.0, "wall_s": 30.5},
    {"row": "MixGRPO", "seeds": 2, "hps": 0.7399, "hps_ci95": 0.0243, "clip": 0.7907, "clip_ci95": 0.0338,
     "gain_hps": "+0.0178 [-0.0026, +0.0381]", "passes": 7264.0, "wall_s": 12.1},
])
CLAIMS = pd.DataFrame([
    {"table": "table1_hps", "claim": "gain over the base model", "metric": "hps", "kind": "gain", "a": "E-GRPO",
     "b": "Base model", "delta": 0.0188, "lo": -0.0390, "hi": 0.0767, "verdict": "not resolved (|Δ| < 0.0767 at 95%)",
     "seeds_to_resolve": 5},
    {"table": "table1_hps", "claim": "gain over the base model", "metric": "hps", "kind": "gain", "a": "MixGRPO",
     "b": "Base model", "delta": 0.0178, "lo": 0.0010, "hi": 0.0346, "verdict": "holds (resolved)",
     "seeds_to_resolve": 2},
])
PROVENANCE = {"git_commit": "abc", "config_hash": "123", "seed": 0, "method": "egrpo",
              "environment": {"cpu": {"model": "Intel(R) Xeon(R) Gold 6248", "vendor": "GenuineIntel"},
                              "kernels": {"aten_capability": "AVX2", "mkl": {"cnr": "COMPATIBLE"}},
                              "threads": {"intra_op": 1}}}


def _folder(root: Path, table: pd.DataFrame, claims: pd.DataFrame, cpu: str, extra_table: bool = False) -> Path:
    (root / "tables").mkdir(parents=True)
    table.to_csv(root / "tables" / "table1_hps.csv", index=False)
    claims.to_csv(root / "tables" / "comparisons.csv", index=False)
    if extra_table:
        table.to_csv(root / "tables" / "table4_tau.csv", index=False)
    for seed in (0, 1):
        run = root / "runs" / "hps" / "egrpo" / "main" / f"seed{seed}"
        run.mkdir(parents=True)
        prov = json.loads(json.dumps(PROVENANCE))
        prov["seed"] = seed
        prov["environment"]["cpu"]["model"] = cpu
        (run / "provenance.json").write_text(json.dumps(prov))
    (root / "world" / "base").mkdir(parents=True)
    (root / "world" / "base" / "pretrain.json").write_text(json.dumps(
        {"flow_loss": 0.25, "flow_seconds": 100.0 + len(cpu), "provenance": {"environment": {"cpu": {"model": cpu}}}}))
    return root


@pytest.fixture
def folders(tmp_path):
    a = _folder(tmp_path / "a", TABLE1, CLAIMS, "Intel(R) Xeon(R) Gold 6248", extra_table=True)
    t = TABLE1.copy()
    t.loc[0, "hps"] += 1e-9                # base hps: past the printed digits
    t.loc[1, "hps"] = 0.7351               # E-GRPO hps: 0.0058 apart, inside both intervals
    t.loc[2, "clip"] = 0.7500              # MixGRPO clip: 0.0407 apart, outside +-0.0338
    t.loc[2, "passes"] = 7000.0            # MixGRPO passes: no interval
    t.loc[1, "gain_hps"] = "+0.0130 [-0.0440, +0.0700]"
    t["wall_s"] = t["wall_s"] * 2          # timing: never compared
    c = CLAIMS.copy()
    c.loc[0, ["delta", "lo", "hi"]] = [0.0130, -0.0440, 0.0700]
    c.loc[0, "verdict"] = "not resolved (|Δ| < 0.0700 at 95%)"
    c.loc[1, ["delta", "lo", "hi"]] = [0.0050, -0.0010, 0.0110]
    c.loc[1, "verdict"] = "not resolved (|Δ| < 0.0110 at 95%)"
    b = _folder(tmp_path / "b", t, c, "AMD EPYC 9654")
    return a, b


def test_status_levels():
    assert status(0.5, 0.5, 0.1, 0.1) == IDENTICAL
    assert status(0.5, 0.5 + 1e-9, 0.1, 0.1) == PRINTED
    assert status(0.5, 0.55, 0.1, 0.06) == WITHIN
    assert status(0.5, 0.55, 0.1, 0.04) == BEYOND  # B's interval does not reach A's value
    assert status(7264.0, 7000.0) == DIFFERENT and status(3.0, 3.0) == IDENTICAL


def test_tables_claims_and_provenance_of_two_folders(folders):
    a, b = folders
    r = compare_folders(a, b)
    cell = {(x.row, x.column): x.status for x in r.cells.itertuples()}
    assert cell[("Base model", "clip")] == IDENTICAL and cell[("Base model", "hps")] == PRINTED
    assert cell[("E-GRPO", "hps")] == WITHIN and cell[("MixGRPO", "clip")] == BEYOND
    assert cell[("MixGRPO", "passes")] == DIFFERENT and cell[("E-GRPO", "gain_hps")] == WITHIN
    assert cell[("MixGRPO", "gain_hps")] == IDENTICAL and ("E-GRPO", "wall_s") not in cell
    claims = {x.a_label: x for x in r.claims.itertuples()}
    assert claims["E-GRPO"].status == WITHIN  # not resolved in both, with other bounds
    assert claims["MixGRPO"].status == BEYOND and claims["MixGRPO"].verdict_a == "holds (resolved)"
    fields = {x.field: x for x in r.provenance.itertuples()}
    assert set(fields) == {"environment.cpu.model", "provenance.environment.cpu.model"}  # not the seconds
    assert fields["environment.cpu.model"].files == 2 and fields["environment.cpu.model"].b == "AMD EPYC 9654"
    assert r.only == [("tables/table4_tau.csv", ONLY_A)] and r.overall == BEYOND
    text = r.report()
    assert "MixGRPO | clip: A 0.7907 ± 0.0338, B 0.7500 ± 0.0338: beyond the intervals" in text
    assert "environment.cpu.model: A 'Intel(R) Xeon(R) Gold 6248', B 'AMD EPYC 9654' (2 file(s))" in text
    assert "verdicts changed: 1" in text and "MixGRPO > Base model on hps: A holds (resolved), B not resolved" in text


def test_a_folder_against_itself_is_identical(folders):
    a, _ = folders
    r = compare_folders(a, a)
    assert r.overall == IDENTICAL and set(r.cells["status"]) == {IDENTICAL} and r.provenance.empty


def test_compare_cli(folders, tmp_path, capsys):
    a, b = folders
    assert main(["compare", str(a), str(a), "--require", "identical"]) == 0
    out = tmp_path / "cmp.csv"
    assert main(["compare", str(a.parent / "a"), str(b), "--out", str(out), "--require", "within"]) == 1
    printed = capsys.readouterr()
    assert "beyond the intervals" in printed.out and "worse than required" in printed.err
    rows = pd.read_csv(out)
    assert set(rows["section"]) == {"table", "claim", "provenance", "file"}
    assert (rows["status"] == ONLY_B).sum() == 0 and (rows["status"] == ONLY_A).sum() == 1


def test_a_folder_without_tables_is_named(tmp_path, capsys):
    with pytest.raises(InputError, match="not a results folder"):
        compare_folders(tmp_path, tmp_path)
    assert main(["compare", str(tmp_path), str(tmp_path)]) == 2
    assert "not a results folder" in capsys.readouterr().err
