"""The GPU benchmark's CPU smoke test: a session that is lent a GPU runs benchmarks/gpu_flux.py once,
with minutes to spare, so its code path (egrpo's Trainer on a FLUX-layout pipeline, LoRA, memory
report) must already work when that session comes."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_runs_its_whole_path_on_cpu(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_flux.py"), "--tiny", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "gpu_flux.json").read_text())
    assert res["device"] == "cpu" and res["fwd_s_b1"] > 0 and res["fwdbwd_s_b4"] > 0 and res["lora_params"] > 0
    # the E-GRPO iteration ran through the Trainer: sampled its branches and tails, then trained
    assert res["egrpo_sampling_passes"] > 100 and res["egrpo_training_passes"] > 0
    assert res["egrpo_iteration_s"] >= res["egrpo_sampling_s"] + res["egrpo_training_s"]


def test_fsdp_gpu_check_runs_its_whole_path_on_cpu(tmp_path):
    """benchmarks/gpu_fsdp.py (full fine-tuning under FSDP2, sharded checkpoint and resume, evaluation on
    the device, the memory plan beside the measured peak) on CPU processes, as CI can run it."""
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_fsdp.py"), "--tiny", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    res = json.loads((tmp_path / "gpu_fsdp.json").read_text())
    assert res["resumed"] and res["iterations_logged"] == [0, 1, 2]
    assert any(f.endswith(".distcp") for f in res["checkpoint_files"]) and "meta.json" in res["checkpoint_files"]
    assert res["evaluated_trained_weights"] and res["plan_peak_gib"] > 0
