"""A per-GPU memory plan of a training job, by component, before it is submitted (`egrpo memory`).

The plan is arithmetic on the run config and the model's architecture (read from its config files
on the meta device, nothing loaded): FSDP2 shards of fp32 master weights, gradients and AdamW
moments; the bf16 block FSDP gathers for compute; activations at the configured batch with or
without gradient checkpointing; the VAE, the text encoders (moved off the GPU once the prompts are
encoded) and the reward models. The activation factor is calibrated once against PyTorch's
FSDPMemTracker on FLUX.1-dev's architecture (`trace_fsdp_step`, which runs an N-rank FSDP2 step in one
process under FakeTensorMode without allocating it; benchmarks/memory_plan.py compares the two), and
tests/test_memory.py holds the plan to the tracker on a smaller FLUX-architecture model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

GiB = 1024**3

# FLUX.1-dev's published transformer (black-forest-labs/FLUX.1-dev, transformer/config.json)
FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=(16, 56, 56))
# activations one block holds for backward, in hidden states [tokens, width] per sample (calibrated
# with FSDPMemTracker on FLUX.1-dev at 720x720: benchmarks/README.md, "Memory plan")
BLOCK_ACTIVATIONS = 25.7
# a no-grad forward holds a few hidden states of one block at a time (input, attention, 4x MLP)
SAMPLING_ACTIVATIONS = 6.0
# FLUX.1-dev's VAE decoder holds 768 values per output pixel at its peak (MemTracker, same section)
DECODE_VALUES_PER_PIXEL = 768
# parameter counts of components the run does not train (FLUX.1-dev's, and the paper's reward models)
FROZEN = {"text_encoder_2": 4.76e9, "text_encoder": 0.123e9, "vae": 0.084e9}
REWARD_PARAMS = {"hpsv21": 0.986e9, "clip_score": 0.987e9, "pickscore": 0.986e9, "imagereward": 0.447e9}


@dataclass(frozen=True)
class Component:
    name: str
    gib: float
    note: str = ""


def transformer_config(model_path: str) -> tuple[dict, str]:
    """The transformer's config.json, or FLUX.1-dev's published one when the path does not exist yet."""
    path = Path(model_path) / "transformer" / "config.json"
    if path.is_file():
        cfg = json.loads(path.read_text())
        return {k: v for k, v in cfg.items() if not k.startswith("_")}, str(path)
    return dict(FLUX_DEV), "FLUX.1-dev's published architecture (model path not found)"


def count_parameters(cfg: dict, lora_rank: int = 0) -> dict:
    """Total, largest-block and trainable parameter counts, from a model built on the meta device."""
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        model = FluxTransformer2DModel(**cfg)
    total = sum(p.numel() for p in model.parameters())
    blocks = [*model.transformer_blocks, *model.single_transformer_blocks]
    largest = max(sum(p.numel() for p in b.parameters()) for b in blocks)
    trainable = total
    if lora_rank:
        from .flux import add_lora

        trainable = sum(p.numel() for p in add_lora(model, lora_rank))
    width = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    return {"total": total, "largest_block": largest, "trainable": trainable, "blocks": len(blocks), "width": width}


def tokens(cfg_run, model_cfg: dict) -> int:
    """Image tokens (2x2-packed latents of a /8 VAE) plus text tokens of one sample."""
    m = cfg_run.model
    return (m.height // 16) * (m.width // 16) + m.max_sequence_length


def shared_input(method) -> bool:
    """Does every trained transition of the method enter from one latent shared by its group (E-GRPO's
    branches off the anchor)? Then a training forward holds one row per group, not micro_batch."""
    from .methods import build_plan
    from .rollout import shares_input

    plan = build_plan(method).for_iteration(0)
    return all(shares_input(r, k) for r in plan.rollouts for k in r.trainable)


def plan(cfg_run, gpus: int) -> dict[str, list[Component]]:
    """Per-GPU memory of a training job by phase: the training step (forward, backward, AdamW) and
    sampling (no-grad forwards and VAE decodes); each phase a list of components (GiB)."""
    m, t = cfg_run.model, cfg_run.train
    arch, _ = transformer_config(m.path)
    n = count_parameters(arch, m.lora_rank)
    shard = gpus if t.parallel == "fsdp" else 1  # DDP replicates everything
    full = not m.lora_rank
    compute_bytes = 2  # bf16 on a GPU
    base = n["total"] * (4 if full else compute_bytes) / shard
    master = [Component("transformer weights", base / GiB,
                        "fp32 master shards" if full else "frozen bf16 base" + (" (sharded)" if shard > 1 else ""))]
    if not full:
        master.append(Component("LoRA adapters", 4 * n["trainable"] / shard / GiB, "fp32"))
    trained = n["trainable"] / shard
    state = [Component("gradients", 4 * trained / GiB, "fp32, reduce-scattered every backward" if shard > 1 else "fp32"),
             Component("AdamW moments", 8 * trained / GiB, "two fp32 moments")]
    gathered = [Component("gathered blocks", 2 * compute_bytes * n["largest_block"] / GiB,
                          "bf16 block in use + the one prefetched")] if t.parallel == "fsdp" and shard > 1 else []
    frozen = [Component("VAE", compute_bytes * FROZEN["vae"] / GiB)]
    frozen += [Component(f"reward {r}", compute_bytes * REWARD_PARAMS.get(r, 0.0) / GiB, "bf16")
               for r in cfg_run.rewards.names if r in REWARD_PARAMS]
    hidden = n["width"] * tokens(cfg_run, arch) * compute_bytes  # one hidden state of one sample
    rows = 1 if shared_input(cfg_run.method) else max(1, t.micro_batch)
    if m.gradient_checkpointing:
        acts = (n["blocks"] + BLOCK_ACTIVATIONS) * rows * hidden
        act_note = f"{rows} row(s): every block's input kept, one block recomputed"
    else:
        acts = n["blocks"] * BLOCK_ACTIVATIONS * rows * hidden
        act_note = f"{rows} row(s), no checkpointing"
    training = master + state + gathered + frozen + [
        Component("activations", acts / GiB, act_note),
        Component("gradient buffers", 4 * n["largest_block"] / GiB if shard > 1 else 0.0, "fp32 reduce-scatter input")]
    step_peak = master + state + frozen + [Component("AdamW update temporaries", 4 * trained / GiB, "foreach step")]
    sample_rows = t.sample_batch or cfg_run.method.group_size
    decode = (m.decode_batch or sample_rows) * m.height * m.width * DECODE_VALUES_PER_PIXEL * compute_bytes
    sampling = master + [Component("AdamW moments", 8 * trained / GiB)] + gathered + frozen + [
        Component("sampling activations", SAMPLING_ACTIVATIONS * sample_rows * hidden / GiB, f"{sample_rows} rows, no grad"),
        Component("VAE decode", decode / GiB, f"{m.decode_batch or sample_rows} images per decode call")]
    startup = master + [Component("text encoders", compute_bytes * (FROZEN["text_encoder"] + FROZEN["text_encoder_2"]) / GiB,
                                  "encode the run's prompts once, then moved off the GPU")]
    return {"training step": training, "optimizer step": step_peak, "sampling": sampling, "start-up": startup}


def plan_report(cfg_run, gpus: int = 8, gpu_gib: float = 79.0) -> str:
    """The plan as text: each phase's components and total, the peak, and a warning when it does not fit."""
    m = cfg_run.model
    _, source = transformer_config(m.path)
    phases = plan(cfg_run, gpus)
    lines = [f"memory plan per GPU: {cfg_run.method.name}, {gpus} process(es), {cfg_run.train.parallel}, "
             f"{'LoRA rank ' + str(m.lora_rank) if m.lora_rank else 'full fine-tuning'}, {m.height}x{m.width}, "
             f"gradient checkpointing {'on' if m.gradient_checkpointing else 'off'}; architecture: {source}"]
    peak = 0.0
    for phase, parts in phases.items():
        total = sum(c.gib for c in parts)
        peak = max(peak, total)
        lines.append(f"  {phase}: {total:.1f} GiB")
        lines += [f"    {c.name:<26} {c.gib:8.2f} GiB  {c.note}" for c in parts if c.gib > 0.005]
    lines.append(f"  peak {peak:.1f} GiB of {gpu_gib:.0f} GiB; add 10-20% for the CUDA context, NCCL buffers "
                 "and allocator fragmentation")
    if peak * 1.1 > gpu_gib:
        lines.append(f"  WARNING: the plan does not fit a {gpu_gib:.0f} GiB GPU: enable gradient checkpointing, lower "
                     "train.micro_batch / train.sample_batch, use more GPUs (FSDP shards weights and moments), or LoRA")
    return "\n".join(lines)


def trace_fsdp_step(arch: dict, *, world: int, batch: int, num_tokens: tuple[int, int],
                    checkpointing: bool = True) -> dict[str, float]:
    """Per-rank steady-state peak (GiB, by FSDPMemTracker category) of one FSDP2 training step of a
    FluxTransformer2DModel on `world` ranks, traced in this process without allocating: a fake process
    group, the device mesh built before FakeTensorMode (torchtitan's order), the model built on the meta
    device and sharded with a bf16/fp32 mixed-precision policy (full fine-tuning, as config/flux.yaml),
    two steps (the second has AdamW state). num_tokens: (image tokens, text tokens)."""
    import torch.distributed as dist
    import torch.distributed.tensor._sharding_prop as sharding_prop
    from diffusers import FluxTransformer2DModel
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        raise RuntimeError("trace_fsdp_step needs a process without a process group")
    dist.init_process_group("fake", rank=0, world_size=world, store=FakeStore())
    # DTensor's sharding propagation would run its global-shape shadow ops in the tracker's own fake
    # mode, which then counts them as real memory (an optimizer step ~27x too large): give it its own
    detect = sharding_prop.detect_fake_mode
    sharding_prop.detect_fake_mode = lambda *a, **k: None
    try:
        mesh = init_device_mesh("cpu", (world,))  # outside FakeTensorMode; "cpu": no GPU on this machine
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        with FakeTensorMode():
            with torch.device("meta"):
                model = FluxTransformer2DModel(**arch)
            if checkpointing:
                model.enable_gradient_checkpointing()
            for block in [*model.transformer_blocks, *model.single_transformer_blocks]:
                fully_shard(block, mesh=mesh, mp_policy=mp)
            fully_shard(model, mesh=mesh, mp_policy=mp)
            model.to_empty(device="cpu")
            model.train()
            params = [p for p in model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=1e-5, foreach=True)
            img, txt = num_tokens
            side = int(img ** 0.5)
            kwargs = dict(
                hidden_states=torch.randn(batch, img, arch["in_channels"]),
                encoder_hidden_states=torch.randn(batch, txt, arch["joint_attention_dim"]),
                pooled_projections=torch.randn(batch, arch["pooled_projection_dim"]),
                timestep=torch.full((batch,), 0.5), guidance=torch.full((batch,), 3.5),
                txt_ids=torch.zeros(txt, 3), img_ids=torch.zeros(side * side, 3), return_dict=False)
            tracker = FSDPMemTracker(mod=model, optm=opt)
            tracker.track_inputs((kwargs["hidden_states"],))
            with tracker:
                for it in range(2):
                    model(**kwargs)[0].float().square().mean().backward()
                    torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
                    opt.step()
                    opt.zero_grad()
                    if it == 0:  # the first step has no AdamW state: measure the second alone
                        tracker.reset_mod_stats()
                        tracker._peak_mem_snap = tracker.get_tracker_snapshot()
                        tracker._peak_mem = {d: s["Total"] for d, s in tracker._peak_mem_snap.items()}
                peak = tracker.get_tracker_snapshot("peak")
        return {k: v / GiB for k, v in next(iter(peak.values())).items()}
    finally:
        sharding_prop.detect_fake_mode = detect
        dist.destroy_process_group()
