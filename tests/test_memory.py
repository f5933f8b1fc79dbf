"""The memory plan: held against PyTorch's FSDPMemTracker on a FLUX-architecture model (8 fake ranks,
nothing allocated), and its report for the paper's config."""

import json
from pathlib import Path

import pytest
import yaml

from egrpo.config import resolve
from egrpo.memory import FLUX_DEV, plan, plan_report, trace_fsdp_step

SMALL = dict(FLUX_DEV, num_layers=2, num_single_layers=4, num_attention_heads=4, attention_head_dim=64,
             joint_attention_dim=256, pooled_projection_dim=64, axes_dims_rope=(8, 28, 28))


def _run_config(model_dir, checkpointing, micro_batch):
    return resolve({"name": "mem", "method": {"name": "dancegrpo"}, "rewards": {"names": ["brightness"]},
                    "model": {"path": str(model_dir), "height": 256, "width": 256, "max_sequence_length": 64,
                              "gradient_checkpointing": checkpointing},
                    "train": {"prompts": ["a"], "micro_batch": micro_batch, "parallel": "fsdp"}})


@pytest.mark.parametrize("checkpointing", [True, False])
def test_plan_matches_the_tracker_on_a_flux_architecture(tmp_path, checkpointing):
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "config.json").write_text(json.dumps(SMALL))
    traced = trace_fsdp_step(SMALL, world=8, batch=12, num_tokens=(256, 64), checkpointing=checkpointing)["Total"]
    step = plan(_run_config(tmp_path, checkpointing, 12), gpus=8)["training step"]
    planned = sum(c.gib for c in step if c.name != "VAE" and not c.name.startswith("reward"))
    assert planned == pytest.approx(traced, rel=0.3), (planned, traced)


def test_the_papers_config_gets_a_plan_by_component():
    raw = yaml.safe_load((Path(__file__).parents[1] / "config" / "flux.yaml").read_text())
    training = dict(raw["training"], model={**raw["training"]["model"], "path": "/nonexistent/FLUX.1-dev"},
                    train={**raw["training"]["train"], "prompts": ["a"]}, rewards={"names": ["hpsv21"]})
    report = plan_report(resolve(training, "dancegrpo"), gpus=8, gpu_gib=79)
    assert "FLUX.1-dev's published architecture" in report
    for part in ("transformer weights", "gradients", "AdamW moments", "gathered blocks", "activations",
                 "reward hpsv21", "text encoders"):
        assert part in report
    # without gradient checkpointing twelve 720x720 rows cannot fit: the plan says so
    no_ckpt = dict(training, model={**training["model"], "gradient_checkpointing": False})
    assert "WARNING" in plan_report(resolve(no_ckpt, "dancegrpo"), gpus=8, gpu_gib=79)
