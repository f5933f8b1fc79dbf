"""A per-GPU memory plan of a training job, phase by phase, before it is submitted (`egrpo memory`),
and the per-phase peaks a run logs to check it against.

The plan is arithmetic on the run config and the model's architecture (read from its config files
on the meta device, nothing loaded), phase by phase in the order a run goes through them:
start-up (prompts encoded with the text encoders on the GPU, then the transformer's weights loaded:
egrpo.startup shards first and loads each rank's fp32 shards), sampling (no-grad forwards, with the
whole bf16 model gathered once when it fits, VAE decodes, reward models), the training step
(forward and backward with FSDP2's gathered blocks and checkpointed activations) and the optimizer
step (AdamW). The activation factors are calibrated against PyTorch's memory trackers on FLUX.1-dev's
architecture (egrpo.memtrace runs every phase in one process on fake tensors, or for real on a GPU;
benchmarks/memory_plan.py compares the two), and tests/test_memory.py holds the plan to the trace,
phase by phase, on a smaller FLUX-architecture model.
Reward models keep fp32 weights unless rewards.precision is bf16.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .startup import builds_sharded

GiB = 1024**3

# FLUX.1-dev's published transformer (black-forest-labs/FLUX.1-dev, transformer/config.json)
FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=(16, 56, 56))
# activations one block holds for backward, in hidden states [tokens, width] per sample (calibrated
# with FSDPMemTracker on FLUX.1-dev at 720x720: benchmarks/README.md, "Memory plan")
BLOCK_ACTIVATIONS = 25.7
# a no-grad forward holds about 17 hidden states per row at its peak, in one block at a time (both
# streams, rope-rotated queries and keys, attention, the 4x MLP and its activation); calibrated with the
# tracker on FLUX.1-dev at 720x720, 24 rows (benchmarks/README.md, "Memory plan": 16.1 gathered per
# forward, 18.6 with the model kept gathered)
SAMPLING_ACTIVATIONS = 17.0
# FLUX.1-dev's VAE decoder holds 768 values per output pixel at its peak (MemTracker, same section)
DECODE_VALUES_PER_PIXEL = 768
# parameter counts of components the run does not train (FLUX.1-dev's, and the paper's reward models)
FROZEN = {"text_encoder_2": 4.76e9, "text_encoder": 0.123e9, "vae": 0.084e9}
REWARD_PARAMS = {"hpsv21": 0.986e9, "hpsv20": 0.986e9, "clip_score": 0.987e9, "pickscore": 0.986e9, "imagereward": 0.447e9}
# the plan's phases, in a run's order, and the key of each one's measured peak in log.jsonl
PHASES = {"start-up: prompts": "startup_prompts", "start-up: weights": "startup_weights", "sampling": "sampling",
          "training step": "training", "optimizer step": "optimizer"}
# a phase planned above this share of the GPU does not fit: CUDA context, NCCL buffers, fragmentation
MARGIN = 1.1


@dataclass(frozen=True)
class Component:
    name: str
    gib: float
    note: str = ""
    transformer: bool = True  # part of the trained transformer's memory (what the traces measure)


def transformer_config(model_path: str) -> tuple[dict, str]:
    """The transformer's config.json, or FLUX.1-dev's published one when the path does not exist yet."""
    path = Path(model_path) / "transformer" / "config.json"
    if path.is_file():
        cfg = json.loads(path.read_text())
        return {k: v for k, v in cfg.items() if not k.startswith("_")}, str(path)
    return dict(FLUX_DEV), "FLUX.1-dev's published architecture (model path not found)"


def frozen_parameters(model_path: str) -> dict[str, float]:
    """Parameter counts of the VAE and text encoders of a Flux-format directory, from their config files
    (built on the meta device); FLUX.1-dev's published counts for what is not there yet."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    builders = {"vae": lambda d: AutoencoderKL.from_config(AutoencoderKL.load_config(d)),
                "text_encoder": lambda d: CLIPTextModel(CLIPTextConfig.from_pretrained(d)),
                "text_encoder_2": lambda d: T5EncoderModel(T5Config.from_pretrained(d))}
    counts = dict(FROZEN)
    for name, build in builders.items():
        folder = Path(model_path) / name
        if (folder / "config.json").is_file():
            with torch.device("meta"):
                counts[name] = float(sum(p.numel() for p in build(folder).parameters()))
    return counts


def count_parameters(cfg: dict, lora_rank: int = 0) -> dict:
    """Total, largest-block, largest-tensor and trainable parameter counts, from a model built on the
    meta device."""
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        model = FluxTransformer2DModel(**cfg)
    total = sum(p.numel() for p in model.parameters())
    blocks = [*model.transformer_blocks, *model.single_transformer_blocks]
    largest = max(sum(p.numel() for p in b.parameters()) for b in blocks)
    tensor = max(p.numel() for p in model.parameters())
    trainable = total
    if lora_rank:
        from .flux import add_lora

        trainable = sum(p.numel() for p in add_lora(model, lora_rank))
    width = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    return {"total": total, "largest_block": largest, "largest_tensor": tensor, "trainable": trainable,
            "blocks": len(blocks), "width": width}


def tokens(cfg_run, model_cfg: dict) -> int:
    """Image tokens (2x2-packed latents of a /8 VAE) plus text tokens of one sample."""
    m = cfg_run.model
    return (m.height // 16) * (m.width // 16) + m.max_sequence_length


def forward_shapes(cfg_run, gpus: int):
    """The largest sampling and training forwards of the run's method on one rank (its share of the
    prompts), from its plan run through the sampler and unit builder on a stand-in (egrpo.cost);
    every row training every trainable step, the most any iteration can batch. A group entering
    from one latent (E-GRPO's branches off the anchor) is one row of a training forward."""
    from .cost import iteration_cost

    t = cfg_run.train
    share = max(1, t.prompts_per_iteration // gpus)
    return iteration_cost(cfg_run.method, share, sample_batch=t.sample_batch, micro_batch=t.micro_batch,
                          every_row_trains=True)


def total(parts: list[Component], transformer_only: bool = False) -> float:
    return sum(c.gib for c in parts if c.transformer or not transformer_only)


def plan(cfg_run, gpus: int, gpu_gib: float = 79.0, arch: dict | None = None) -> dict[str, list[Component]]:
    """Per-GPU memory of a training job by phase (PHASES, in a run's order), each a list of components
    (GiB). `gpus`: processes of the job (FSDP2 under torchrun at any count, 1 included); `gpu_gib`
    decides whether sampling keeps the whole bf16 model gathered (it does when that fits with MARGIN).
    The forwards' rows are the method's own (forward_shapes)."""
    m, t = cfg_run.model, cfg_run.train
    arch = arch or transformer_config(m.path)[0]
    n = count_parameters(arch, m.lora_rank)
    fsdp = t.parallel == "fsdp"
    shard = gpus if fsdp else 1  # DDP replicates everything
    full = not m.lora_rank
    compute_bytes = 2  # bf16 on a GPU
    base = n["total"] * (4 if full else compute_bytes) / shard
    master = [Component("transformer weights", base / GiB,
                        "fp32 master shards" if full else "frozen bf16 base" + (" (sharded)" if shard > 1 else ""))]
    if not full:
        master.append(Component("LoRA adapters", 4 * n["trainable"] / shard / GiB, "fp32"))
    trained = n["trainable"] / shard
    grads = [Component("gradients", 4 * trained / GiB, "fp32, reduce-scattered every backward" if fsdp else "fp32")]
    moments = [Component("AdamW moments", 8 * trained / GiB, "two fp32 moments")]
    # FSDP2 gathers bf16 blocks for compute at any world size, one process included
    gathered = [Component("gathered blocks", 2 * compute_bytes * n["largest_block"] / GiB,
                          "bf16 block in use + the one prefetched")] if fsdp else []
    frozen = frozen_parameters(m.path)
    vae = [Component("VAE", compute_bytes * frozen["vae"] / GiB, "bf16", transformer=False)]
    rewards = []
    for r in cfg_run.rewards.names:
        if r in REWARD_PARAMS:  # amp keeps fp32 weights (the releases' training rewards)
            precision = cfg_run.rewards.reward_options(r)["precision"]
            size = 2 if precision == "bf16" else 4
            rewards.append(Component(f"reward {r}", size * REWARD_PARAMS[r] / GiB,
                                     "bf16" if size == 2 else f"fp32 weights ({precision})", transformer=False))
    hidden = n["width"] * tokens(cfg_run, arch) * compute_bytes  # one hidden state of one sample
    shapes = forward_shapes(cfg_run, gpus)
    rows = max(1, shapes.training_batch)  # distinct inputs: a group entering from one latent shares a row
    if m.gradient_checkpointing:
        acts = (n["blocks"] + BLOCK_ACTIVATIONS) * rows * hidden
        act_note = f"{rows} row(s): every block's input kept, one block recomputed"
    else:
        acts = n["blocks"] * BLOCK_ACTIVATIONS * rows * hidden
        act_note = f"{rows} row(s), no checkpointing"
    training = master + grads + moments + gathered + vae + rewards + [
        Component("activations", acts / GiB, act_note),
        Component("gradient buffers", 4 * n["largest_block"] / GiB if fsdp else 0.0, "fp32 reduce-scatter input")]
    step_peak = master + grads + moments + vae + rewards + [
        Component("AdamW update temporaries", 4 * trained / GiB, "foreach step")]

    sample_rows = shapes.sampling_batch
    decode = (m.decode_batch or sample_rows) * m.height * m.width * DECODE_VALUES_PER_PIXEL * compute_bytes
    sampling_rest = vae + rewards + [
        Component("sampling activations", SAMPLING_ACTIVATIONS * sample_rows * hidden / GiB, f"{sample_rows} rows, no grad"),
        Component("VAE decode", decode / GiB, f"{m.decode_batch or sample_rows} images per decode call", transformer=False)]
    whole = [Component("gathered model", compute_bytes * n["total"] / GiB,
                       "bf16, all-gathered once for all of an iteration's sampling forwards")]
    sampling = master + moments + whole + sampling_rest
    if fsdp and total(sampling) * MARGIN > gpu_gib:  # no room: gather per forward
        sampling = master + moments + gathered + sampling_rest
    if not fsdp:
        sampling = master + moments + sampling_rest

    encoders = [Component("text encoders", compute_bytes * (frozen["text_encoder"] + frozen["text_encoder_2"]) / GiB,
                          "bf16, encode the run's prompts once, then moved off the GPU", transformer=False)]
    if fsdp and builds_sharded(t.parallel, m.lora_rank):  # egrpo.startup: shard first, then load
        prompts = encoders + vae
        weights = master + vae + rewards + [Component(
            "tensor in flight", compute_bytes * n["largest_tensor"] / GiB,
            "rank 0 broadcasts the stored bf16 weights one tensor at a time; each rank copies its slice")]
    else:  # the pipeline loads the whole transformer onto every GPU
        stored = [Component("whole transformer", compute_bytes * n["total"] / GiB, "bf16, as loaded")]
        prompts = encoders + vae + stored
        whole_master = [Component("whole transformer", (4 if full else compute_bytes) * n["total"] / GiB,
                                  "fp32 master weights before sharding" if full else "bf16 base before sharding")]
        weights = whole_master + ([Component("LoRA adapters", 4 * n["trainable"] / GiB, "fp32")] if not full else []) \
            + vae + rewards
    return {"start-up: prompts": prompts, "start-up: weights": weights, "sampling": sampling,
            "training step": training, "optimizer step": step_peak}


def keeps_gathered(cfg_run, gpus: int, gpu_gib: float) -> bool:
    """Whether sampling keeps the whole bf16 model gathered (FSDP2, where the plan has room for it)."""
    return any(c.name == "gathered model" for c in plan(cfg_run, gpus, gpu_gib)["sampling"])


def device_gib(device: torch.device) -> float:
    """Memory of this rank's device: the GPU's, or on the CPU the host's share of one local process."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / GiB
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB / local


def export_size(cfg_run) -> dict[str, float]:
    """The final export's footprint (GiB): rank 0 gathers the trainable weights into host memory (a bf16
    export casts a copy beside the fp32 gather) and writes them in train.export_dtype."""
    arch, _ = transformer_config(cfg_run.model.path)
    n = count_parameters(arch, cfg_run.model.lora_rank)["trainable"]
    size = 2 if cfg_run.train.export_dtype == "bf16" else 4
    return {"host": (4 + (size if size != 4 else 0)) * n / GiB, "disk": size * n / GiB}


def plan_report(cfg_run, gpus: int = 8, gpu_gib: float = 79.0) -> str:
    """The plan as text: each phase's components and total, the peak, and a warning when it does not fit."""
    m = cfg_run.model
    _, source = transformer_config(m.path)
    phases = plan(cfg_run, gpus, gpu_gib)
    lines = [f"memory plan per GPU: {cfg_run.method.name}, {gpus} process(es), {cfg_run.train.parallel}, "
             f"{'LoRA rank ' + str(m.lora_rank) if m.lora_rank else 'full fine-tuning'}, {m.height}x{m.width}, "
             f"gradient checkpointing {'on' if m.gradient_checkpointing else 'off'}; architecture: {source}"]
    peak = 0.0
    for phase, parts in phases.items():
        peak = max(peak, total(parts))
        lines.append(f"  {phase}: {total(parts):.1f} GiB")
        lines += [f"    {c.name:<26} {c.gib:8.2f} GiB  {c.note}" for c in parts if c.gib > 0.005]
    lines.append(f"  peak {peak:.1f} GiB of {gpu_gib:.0f} GiB; add 10-20% for the CUDA context, NCCL buffers "
                 "and allocator fragmentation")
    export = export_size(cfg_run)
    lines.append(f"  export: rank 0 gathers the trained weights in host memory ({export['host']:.1f} GiB) and writes "
                 f"{export['disk']:.1f} GiB per run ({cfg_run.train.export_dtype})")
    if peak * MARGIN > gpu_gib:
        lines.append(f"  WARNING: the plan does not fit a {gpu_gib:.0f} GiB GPU: enable gradient checkpointing, lower "
                     "train.micro_batch / train.sample_batch, use more GPUs (FSDP shards weights and moments), or LoRA")
    return "\n".join(lines)


class PhasePeaks:
    """Peak device memory of each phase a run goes through, from the allocator's own counter: reset
    when a phase starts, read when the next one starts (a phase met several times keeps its largest
    peak until `take`). CUDA only: elsewhere there is no allocator counter and nothing is recorded."""

    def __init__(self, device: torch.device):
        self.device, self.on = device, device.type == "cuda"
        self.current: str | None = None
        self.peaks: dict[str, float] = {}

    def start(self, phase: str | None) -> None:
        """End the running phase and start `phase` (None: between phases, not recorded)."""
        if not self.on:
            return
        if self.current is not None:
            peak = torch.cuda.max_memory_allocated(self.device) / GiB
            self.peaks[self.current] = max(self.peaks.get(self.current, 0.0), peak)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.current = phase

    def take(self) -> dict[str, float]:
        """End the running phase; the peaks recorded since the last take, as log keys (memory/<phase>_gib)."""
        self.start(None)
        out = {f"memory/{PHASES[k]}_gib": v for k, v in self.peaks.items()}
        self.peaks = {}
        return out
