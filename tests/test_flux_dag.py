"""config/flux.yaml, the file users run, through every rule of the DAG in miniature: the same file
with only its inputs pointed at tiny real-architecture stand-ins (`egrpo stand-ins`) and its budget
scaled down. Every train job runs as the cluster runs it: torchrun, 2 processes, FSDP2 full
fine-tuning (on CPU processes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from egrpo.config import deep_merge
from egrpo.experiment import Experiment

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def flux_dag(tmp_path_factory):
    work = tmp_path_factory.mktemp("flux_dag")
    r = subprocess.run([sys.executable, "-m", "egrpo", "stand-ins", str(work / "stand-ins")], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    overlay = work / "stand-ins" / "overlay.yaml"
    # the README's command, as a user checks a cluster install before spending GPU hours
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "workflow" / "Snakefile"), "--directory",
           str(work), "--cores", "2", "--resources", "gpu=2", "--configfile", str(ROOT / "config" / "flux.yaml"),
           str(overlay)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=2400, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, f"{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return work, yaml.safe_load(overlay.read_text()), r.stdout + r.stderr


def test_every_rule_ran(flux_dag):
    work, _, out = flux_dag
    for rule in ("run_config", "eval_config", "train", "evaluate_run", "evaluate_base", "qualitative_prompts",
                 "qualitative_images", "variance", "tables", "figures"):
        assert f"rule {rule}:" in out or f"localrule {rule}:" in out, rule
    res = work / "results"
    for t in ("table1_hps", "table1_hps_clip", "table2_merge", "table3_steps", "table4_tau"):
        table = (res / "tables" / f"{t}.md").read_text()
        assert "(paper)" in table and " Δ" in table  # the paper's values and the difference beside ours
    both = (res / "tables" / "table1_hps_clip.md").read_text()  # how each method combines HPS and CLIP
    assert "MixGRPO 0.5 hpsv21 + 0.5 clip_score" in both and "E-GRPO 1 hpsv21 + 1 clip_score" in both
    assert "GranularGRPO 1 hpsv21 + 1 clip_score" in both and "TempFlow-GRPO 1 hpsv21 + 1 clip_score" in both
    assert "DanceGRPO, BranchGRPO, TempFlow-GRPO: no released code trains this setting" in both
    for s in ("hps", "hps_clip"):  # Table 1's six methods, each with its compute
        rows = {line.split("|")[1].strip(): line for line in (res / "tables" / f"table1_{s}.md").read_text().splitlines()
                if line.startswith("|")}
        for name in ("E-GRPO", "DanceGRPO", "MixGRPO", "GranularGRPO", "BranchGRPO", "TempFlow-GRPO"):
            assert name in rows and rows[name].count("|") == rows["Base model"].count("|"), name
    for f in ("fig1b_entropy", "fig1a_variance", "fig4_reward_curves", "fig5_qualitative", "tau_ablation"):
        assert (res / "figures" / f"{f}.png").stat().st_size > 1000


def test_training_ran_as_on_the_cluster_and_changed_every_run(flux_dag):
    work, overlay, _ = flux_dag
    base = load_file(str(Path(overlay["inputs"]["model"]) / "transformer" / "diffusion_pytorch_model.safetensors"))
    runs = sorted((work / "results" / "runs").glob("*/*/*/seed0"))
    config = deep_merge(yaml.safe_load((ROOT / "config" / "flux.yaml").read_text()), overlay)
    # every run the file declares (2 settings x 6 methods + each E-GRPO ablation row), one seed, and no other
    assert {str(r.relative_to(work)) for r in runs} == {r.dir for r in Experiment.load(config).runs}
    for run in runs:
        prov = json.loads((run / "provenance.json").read_text())
        assert prov["processes"] == 2  # torchrun --nproc-per-node 2
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["train"]["parallel"] == "fsdp" and cfg["model"]["lora_rank"] == 0  # full fine-tuning
        trained = load_file(str(run / "final" / "trainable.safetensors"))
        assert trained.keys() == base.keys()
        assert any(not torch.equal(trained[k].float(), base[k].float()) for k in base), run
        assert not (run / "checkpoints").exists()  # flux.yaml keeps no checkpoint once the weights are exported


def test_evaluation_scored_the_trained_model(flux_dag):
    work, _, _ = flux_dag
    for summary in (work / "results" / "eval").glob("*/*/*/seed0.summary.csv"):
        setting, method, variant = summary.parts[-4:-1]
        meta = json.loads((work / "results/runs" / setting / method / variant / "seed0/final/meta.json").read_text())
        weights = {line.split(",")[-1] for line in summary.read_text().splitlines()[1:]}
        assert weights == {meta["weights_sha256"][:12]}, summary
    assert {line.split(",")[-1] for line in (work / "results/eval/base.summary.csv").read_text().splitlines()[1:]} \
        == {"base"}


def test_a_resolved_flux_run_config_carries_every_rewards_weights(flux_dag):
    work, overlay, _ = flux_dag
    (path,) = (work / "results/configs/hps_clip/egrpo/main").glob("*.json")  # named by its content
    cfg = json.loads(path.read_text())
    assert cfg["rewards"]["names"] == ["hpsv21", "clip_score"]
    assert cfg["rewards"]["options"]["hpsv21"] == overlay["inputs"]["rewards"]["hpsv21"]
    assert cfg["rewards"]["options"]["clip_score"] == overlay["inputs"]["rewards"]["clip_score"]
    assert cfg["model"]["path"] == overlay["inputs"]["model"]
