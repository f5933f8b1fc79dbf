"""torchrun with 2 CPU processes (gloo) gives the same run as 1 process with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import tiny_run_config

# Tolerances: rewards and grad norms agree to float32 reduction-order noise (~1e-5 relative here);
# the PPO loss is itself ~1e-6 (advantages have zero group mean at ratio 1), so it is compared absolutely.
REL, LOSS_ABS = 1e-3, 1e-4


def _run(cfg_path, out, nproc, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)] if nproc > 1 \
        else [sys.executable]
    cmd = launcher + ["-m", "egrpo", "train", "--config", str(cfg_path), "--method", "dancegrpo",
                      "--out", str(out), "--no-progress", *extra]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one(tiny_flux_dir, tmp_path, parallel):
    cfg = tiny_run_config(tiny_flux_dir, "dancegrpo", train={"iterations": 3, "checkpoint_every": 10})
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    one = _run(cfg_path, tmp_path / "one", 1)
    two = _run(cfg_path, tmp_path / "two", 2, "--set", f"train.parallel={parallel}")
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        assert a["reward/brightness/mean"] == pytest.approx(b["reward/brightness/mean"], rel=REL)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=REL)
        assert abs(a["loss"] - b["loss"]) < LOSS_ABS
        assert a["trained_pairs"] == b["trained_pairs"] and a["passes/sampling"] == b["passes/sampling"]
    assert one[2]["reward/brightness/mean"] != one[0]["reward/brightness/mean"]  # the model did change
