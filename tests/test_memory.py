"""The memory plan, phase by phase: held against PyTorch's memory tracker on a FLUX-architecture model
(rank 0 of 8 fake ranks, nothing allocated: egrpo.memtrace), its report for the paper's config, the
sampling decision it makes, and the per-phase peaks a run logs."""

import re
from pathlib import Path

import pytest
import torch
import yaml

from egrpo.config import resolve
from egrpo.memory import FLUX_DEV, GiB, PhasePeaks, count_parameters, keeps_gathered, plan, plan_report
from egrpo.memtrace import measure_phases, planned_phases

SMALL = dict(FLUX_DEV, num_layers=2, num_single_layers=4, num_attention_heads=4, attention_head_dim=64,
             joint_attention_dim=256, pooled_projection_dim=64, axes_dims_rope=(8, 28, 28))
TOKENS = (256, 64)  # 256x256 images, 64 text tokens


@pytest.fixture(scope="module")
def traced():
    return measure_phases(SMALL, world=8, batches=(1, 12), sample_rows=24, num_tokens=TOKENS, trace=True)


def test_start_up_shards_first_and_the_plan_holds_it_within_ten_percent(traced):
    planned = planned_phases(SMALL, world=8, batches=(1, 12), sample_rows=24, height=256, text_tokens=64)
    whole_fp32 = 4 * count_parameters(SMALL)["total"] / GiB
    # the obvious order holds the whole fp32 transformer; sharded first, one eighth and a tensor in flight
    assert traced["start-up (obvious order)"] >= whole_fp32
    assert traced["start-up: weights"] < 0.2 * traced["start-up (obvious order)"]
    assert planned["start-up: weights"] == pytest.approx(traced["start-up: weights"], rel=0.1)


def test_every_later_phase_of_the_plan_matches_the_trace(traced):
    planned = planned_phases(SMALL, world=8, batches=(1, 12), sample_rows=24, height=256, text_tokens=64)
    for phase in ("training step (1 rows)", "training step (12 rows)", "optimizer step (1 rows)",
                  "optimizer step (12 rows)", "sampling (gathered, 24 rows)", "sampling (per forward, 24 rows)"):
        assert planned[phase] == pytest.approx(traced[phase], rel=0.3), (phase, planned[phase], traced[phase])
    # keeping the model gathered costs the gathered bf16 model, nothing else
    gathered = traced["sampling (gathered, 24 rows)"] - traced["sampling (per forward, 24 rows)"]
    assert gathered == pytest.approx(2 * count_parameters(SMALL)["total"] / GiB * 7 / 8, rel=0.3)


def test_without_checkpointing_the_plan_matches_the_trace():
    traced = measure_phases(SMALL, world=8, batches=(12,), sample_rows=24, num_tokens=TOKENS, trace=True,
                            checkpointing=False)
    planned = planned_phases(SMALL, world=8, batches=(12,), sample_rows=24, height=256, text_tokens=64,
                             checkpointing=False)
    assert planned["training step (12 rows)"] == pytest.approx(traced["training step (12 rows)"], rel=0.3)


def test_the_gpu_path_of_the_measurement_runs_for_real_on_the_cpu():
    """measure_phases without fake tensors (what phase A of benchmarks/gpu_fsdp.py runs on a GPU): real
    tensors and compute; on the CPU there is no allocator counter, so only the steps and timings."""
    arch = dict(SMALL, num_layers=1, num_single_layers=1)
    measured = measure_phases(arch, world=8, batches=(2,), sample_rows=3, num_tokens=(16, 8), trace=False,
                              device="cpu")
    assert measured["s/training step (2 rows)"] > 0 and measured["s/sampling forward (gathered, 3 rows)"] > 0
    assert set(measured) >= {"start-up (obvious order)", "start-up: weights", "optimizer step (2 rows)",
                             "sampling (per forward, 3 rows)"}


def _papers(method="dancegrpo", train=None, **model):
    raw = yaml.safe_load((Path(__file__).parents[1] / "config" / "flux.yaml").read_text())
    training = dict(raw["training"], model={**raw["training"]["model"], "path": "/nonexistent/FLUX.1-dev", **model},
                    train={**raw["training"]["train"], "prompts": ["a"], **(train or {})}, rewards={"names": ["hpsv21"]})
    return resolve(training, method)


def test_the_papers_config_gets_a_plan_by_phase_and_component():
    report = plan_report(_papers(), gpus=8, gpu_gib=79)
    assert "FLUX.1-dev's published architecture" in report
    for part in ("start-up: prompts", "start-up: weights", "tensor in flight", "transformer weights", "gradients",
                 "AdamW moments", "gathered model", "gathered blocks", "activations", "reward hpsv21", "text encoders"):
        assert part in report
    # the export: fp32 master weights by default (FLUX.1-dev: 11.9 B parameters, 44.3 GiB), bf16 half
    assert "writes 44.3 GiB per run (fp32)" in report and re.search(r"reward hpsv21 +3.67 GiB +fp32 weights \(amp\)", report)
    assert "writes 22.2 GiB per run (bf16)" in plan_report(_papers(train={"export_dtype": "bf16"}), gpus=8, gpu_gib=79)
    # without gradient checkpointing twelve 720x720 rows cannot fit: the plan says so
    assert "WARNING" in plan_report(_papers(gradient_checkpointing=False), gpus=8, gpu_gib=79)


def test_start_up_is_no_longer_the_peak_and_sampling_keeps_the_model_where_it_fits():
    phases = {k: sum(c.gib for c in v) for k, v in plan(_papers("egrpo"), gpus=8, gpu_gib=79).items()}
    assert phases["start-up: weights"] < 10 and phases["start-up: prompts"] < 10  # not the 44 GiB of the old order
    assert keeps_gathered(_papers(), 8, 79.0) and not keeps_gathered(_papers(), 8, 40.0)
    lora = plan(_papers(lora_rank=16, **{}), gpus=8)  # LoRA loads the whole bf16 base onto every GPU
    assert any(c.name == "whole transformer" for c in lora["start-up: prompts"])


def test_phase_peaks_reset_the_allocator_counter_per_phase(monkeypatch):
    allocated = {"now": 0, "peak": 0}
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d: allocated.update(peak=allocated["now"]))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d: allocated["peak"])

    def use(gib):
        allocated["now"] = gib * GiB
        allocated["peak"] = max(allocated["peak"], allocated["now"])

    peaks = PhasePeaks(torch.device("cuda", 0))
    peaks.start("sampling")
    use(30), use(10)
    peaks.start("training step")
    use(20)
    peaks.start("optimizer step")
    use(25), use(10)
    peaks.start("training step")
    use(12)
    assert peaks.take() == {"memory/sampling_gib": 30, "memory/training_gib": 20, "memory/optimizer_gib": 25}
    assert peaks.take() == {}
    assert PhasePeaks(torch.device("cpu")).take() == {}  # no allocator counter on the CPU


def test_each_methods_forward_shapes_from_its_plan():
    """The plan's training batch is the distinct inputs a forward takes on one rank (flux.yaml, 8 GPUs):
    E-GRPO's branches share their anchor latent (1 row; GranularGRPO's 2 prompts a rank: 2), TempFlow-GRPO's
    24 prompts a rank one per group (12: micro_batch); DanceGRPO's and BranchGRPO's steps pack their
    transitions into forwards (timesteps per row): up to 10 of DanceGRPO's rows, 12 tree edges (micro_batch)."""
    from egrpo.experiment import Experiment
    from egrpo.memory import forward_shapes

    raw = yaml.safe_load((Path(__file__).parents[1] / "config" / "flux.yaml").read_text())
    raw["inputs"]["model"] = "/nonexistent/FLUX.1-dev"
    exp = Experiment.load(raw)
    shapes = {m: forward_shapes(exp.run_config("hps", m), 8) for m in exp.methods}
    assert {m: s.training_batch for m, s in shapes.items()} == {
        "egrpo": 1, "g2rpo": 2, "dancegrpo": 10, "mixgrpo": 12, "tempflow": 12, "branchgrpo": 12}
    assert {m: s.sampling_batch for m, s in shapes.items()} == {
        "egrpo": 24, "g2rpo": 24, "dancegrpo": 24, "mixgrpo": 24, "tempflow": 24, "branchgrpo": 16}
    for m in exp.methods:
        report = plan_report(exp.run_config("hps", m), gpus=8, gpu_gib=79)
        assert f"{shapes[m].training_batch} row(s)" in report and "WARNING" not in report
