import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import tiny_run_config


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "egrpo", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_train_cli_writes_log_checkpoint_and_weights(tiny_flux_dir, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_run_config(tiny_flux_dir, "egrpo", train={"iterations": 1})))
    r = _cli("train", "--config", str(cfg), "--method", "egrpo", "--seed", "3", "--out", str(tmp_path / "o"),
             "--no-progress")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o" / "final" / "trainable.safetensors").is_file()
    assert (tmp_path / "o" / "checkpoints" / "last" / "meta.json").is_file()
    assert '"seed": 3' in (tmp_path / "o" / "config.json").read_text()
    meta = json.loads((tmp_path / "o" / "final" / "meta.json").read_text())
    assert Path(meta["base"]).is_absolute()  # resolves from any working directory


def test_train_then_evaluate_matches_a_separate_evaluation(tiny_flux_dir, tmp_path):
    """`egrpo train --evaluate` (the default DAG's fused job) writes what `egrpo evaluate --run` writes."""
    import json

    import pandas as pd

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_run_config(tiny_flux_dir, "dancegrpo", train={"iterations": 1})))
    (tmp_path / "p.txt").write_text("a red circle\na blue square\na cat\n")
    protocol = tmp_path / "eval.json"
    protocol.write_text(json.dumps({"prompts": str(tmp_path / "p.txt"), "metrics": {"hps": {"reward": "brightness"}},
                                    "sampler": {"num_steps": 3, "height": 64, "width": 64},
                                    "max_sequence_length": 16}))
    r = _cli("train", "--config", str(cfg), "--method", "dancegrpo", "--out", str(tmp_path / "o"), "--no-progress",
             "--evaluate", str(protocol), "--eval-out", str(tmp_path / "fused.csv"))
    assert r.returncode == 0, r.stderr
    r = _cli("evaluate", "--run", str(tmp_path / "o"), "--protocol", str(protocol), "--out", str(tmp_path / "sep.csv"),
             cwd="/")  # evaluation works from any working directory
    assert r.returncode == 0, r.stderr
    fused, separate = pd.read_csv(tmp_path / "fused.csv"), pd.read_csv(tmp_path / "sep.csv")
    assert len(fused) == 3
    pd.testing.assert_frame_equal(fused, separate)
    assert (tmp_path / "fused.summary.csv").is_file()


def test_several_seeds_in_one_process_equal_separate_runs(tiny_flux_dir, tmp_path):
    """`--seed 0 1` (the default DAG's job per configuration) trains and evaluates each seed exactly as
    a process of its own would; paths take {seed}."""
    import json

    import pandas as pd
    import torch
    from safetensors.torch import load_file

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_run_config(tiny_flux_dir, "egrpo", train={"iterations": 1},
                                                  model={"lora_rank": 4})))
    (tmp_path / "p.txt").write_text("a red circle\na cat\n")
    protocol = tmp_path / "eval.json"
    protocol.write_text(json.dumps({"prompts": str(tmp_path / "p.txt"), "metrics": {"hps": {"reward": "brightness"}},
                                    "sampler": {"num_steps": 3, "height": 32, "width": 32}, "max_sequence_length": 16}))
    train = ("train", "--config", str(cfg), "--method", "egrpo", "--no-progress", "--evaluate", str(protocol))
    r = _cli(*train, "--seed", "0", "1", "--out", str(tmp_path / "both" / "seed{seed}"),
             "--eval-out", str(tmp_path / "both" / "seed{seed}.csv"))
    assert r.returncode == 0, r.stderr
    r = _cli(*train, "--seed", "1", "--out", str(tmp_path / "solo"), "--eval-out", str(tmp_path / "solo.csv"))
    assert r.returncode == 0, r.stderr

    weights = lambda run: load_file(str(tmp_path / run / "final" / "trainable.safetensors"))  # noqa: E731
    together, alone, seed0 = weights("both/seed1"), weights("solo"), weights("both/seed0")
    assert together.keys() == alone.keys() and all(torch.equal(together[k], alone[k]) for k in alone)
    assert not all(torch.equal(seed0[k], alone[k]) for k in alone)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "both" / "seed1.csv"), pd.read_csv(tmp_path / "solo.csv"))

    r = _cli(*train, "--seed", "0", "1", "--out", str(tmp_path / "x"), "--eval-out", str(tmp_path / "x.csv"))
    assert r.returncode != 0 and "--out, --eval-out must contain {seed}" in r.stderr


def test_config_errors_are_one_line_naming_the_key(tiny_flux_dir, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_run_config(tiny_flux_dir, "egrpo")))
    for override, key in [("method.tua=2", "method.tua"), ("optim.lr=fast", "optim.lr"),
                          ("method.tau=-1", "method.tau"), ("train.iterations=0", "train.iterations")]:
        r = _cli("train", "--config", str(cfg), "--method", "egrpo", "--out", str(tmp_path / "x"), "--set", override)
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and key in lines[0], r.stderr


def test_missing_weights_error_names_path(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_run_config(tmp_path / "no_such_model", "dancegrpo")))
    r = _cli("train", "--config", str(cfg), "--method", "dancegrpo", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "no_such_model" in r.stderr and "does not exist" in r.stderr
