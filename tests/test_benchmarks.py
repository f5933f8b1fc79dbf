"""The GPU benchmark's CPU smoke test: a session that is lent a GPU runs benchmarks/gpu_flux.py once,
with minutes to spare, so its code path (egrpo's Trainer on a FLUX-layout pipeline, LoRA, memory
report) must already work when that session comes."""

import json
import os
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


def test_fsdp_gpu_check_runs_its_whole_path_on_cpu_from_a_tree_never_installed(bare_checkout, tmp_path):
    """benchmarks/gpu_fsdp.py --tiny as a GPU machine gets it (a copied tree, no egrpo installed), run from
    another folder: preflight, phase A (every phase's peak against the plan, fake tensors here) and phase
    B (torchrun training, checkpoint, resume, export, evaluation)."""
    python, tree = bare_checkout
    r = subprocess.run([str(python), str(tree / "benchmarks/gpu_fsdp.py"), "--tiny", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    res = json.loads((tmp_path / "gpu_fsdp.json").read_text())
    assert res["finished"] and res["preflight"]["missing"] == [] and res["preflight"]["tree"] == str(tree)
    assert "dancegrpo" in res["preflight"]["methods"]
    a = res["phase_a"]
    for phase in ("start-up (obvious order)", "start-up: weights", "training step (12 rows)", "optimizer step (1 rows)",
                  "sampling (gathered, 24 rows)", "sampling (per forward, 24 rows)"):
        assert a["compared"][phase]["measured_gib"] > 0 and a["compared"][phase]["planned_gib"] > 0
    assert a["measured"]["start-up: weights"] < a["measured"]["start-up (obvious order)"]
    b = res["phase_b"]
    assert b["resumed"] and b["iterations_logged"] == [0, 1] and b["trained_pairs"] == 12 * 5
    assert [e["event"] for e in b["io"]] == ["checkpoint saved", "exported", "checkpoint loaded", "checkpoint saved",
                                            "exported"]
    assert {"save", "load", "export"} <= set(b["throughput"]) and b["first_update"]["clip_range"] == 1e-4
    assert any(f.endswith(".distcp") for f in b["checkpoint_files"]) and "meta.json" in b["checkpoint_files"]
    assert b["evaluated_trained_weights"] and b["export_is_a_diffusers_directory"]


def test_fsdp_gpu_check_stops_in_one_line_naming_what_is_missing(bare_checkout, tmp_path):
    """Without CUDA and without a package (hidden here), the preflight names both and stops at once."""
    python, tree = bare_checkout
    hide = tmp_path / "hide"
    (hide / "pandas").mkdir(parents=True)
    (hide / "pandas" / "__init__.py").write_text("raise ImportError('pandas is not installed here')\n")
    r = subprocess.run([str(python), str(tree / "benchmarks/gpu_fsdp.py"), "--out", str(tmp_path)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(hide)})
    assert r.returncode == 3
    line = [x for x in r.stdout.splitlines() if x.startswith("gpu_fsdp preflight")]
    assert len(line) == 1 and "pandas" in line[0] and "a CUDA device" in line[0]
    assert json.loads((tmp_path / "gpu_fsdp.json").read_text())["preflight"]["missing"]


def test_gpu_determinism_benchmark_runs_its_whole_path_on_cpu_from_a_tree_never_installed(bare_checkout, tmp_path):
    """benchmarks/gpu_determinism.py as a GPU machine gets it (a copied tree, no egrpo installed): both
    halves in their own processes, the ratios and the bitwise repeat check (a CPU step repeats either
    way; the GPU answer is what the benchmark is for)."""
    python, tree = bare_checkout
    r = subprocess.run([str(python), str(tree / "benchmarks/gpu_determinism.py"), "--tiny", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "gpu_determinism.json").read_text())
    assert res["ratio_fwd_s"] > 0 and res["ratio_fwdbwd_s"] > 0
    assert res["default"]["repeats_bitwise"] and res["deterministic"]["repeats_bitwise"]
    assert res["default"]["device"] == "cpu" and res["deterministic"]["switches"]["sdp"]["cudnn"] is False
