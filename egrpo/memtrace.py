"""Every phase of an FSDP2 training job, measured as rank 0 of N in one process: start-up (in the
obvious order and sharded first), training steps, optimizer steps and sampling, each with its own peak.

Two ways, one code path:
- `trace=True` (CPU, no GPU needed): under FakeTensorMode nothing is allocated or computed; PyTorch's
  MemTracker counts every tensor the phases would hold. FLUX.1-dev at full size traces on a laptop.
- `trace=False` on a GPU: real allocations and compute, peaks from the CUDA allocator, seconds per step
  (on the CPU the same steps run for real with no counter: a smoke test of the GPU path).

Either way a fake process group of `world` ranks stands in for the others (torchtitan's fake backend):
collectives are no-ops, so rank 0 holds exactly what it would hold among `world` ranks. The model is
FluxTransformer2DModel of the given architecture with random weights (no files), bf16 compute over fp32
master shards, as config/flux.yaml trains it. egrpo.memory's plan is compared phase by phase
(`planned_phases`).
"""

from __future__ import annotations

import contextlib
import gc
import time
from typing import Callable

import torch

from . import distributed as dist
from .config import GUIDANCE
from .memory import GiB, plan, total


class _CudaMeter:
    def __init__(self, device):
        self.device = device

    def reset(self):
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> float:
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device) / GiB

    def now(self) -> float:
        return torch.cuda.memory_allocated(self.device) / GiB

    def next_call(self):
        pass


class _NoMeter(_CudaMeter):
    """Real tensors on the CPU: no allocator counter (peaks read 0); runs the GPU path's steps anywhere."""

    def reset(self):
        pass

    def peak(self) -> float:
        return 0.0

    def now(self) -> float:
        return 0.0


def _totals_tracker():
    """PyTorch's MemTracker keeping per-device totals only: its per-module peaks cost a pass over every
    tracked module after every operator, which at FLUX.1-dev's 57 blocks dominates the trace."""
    from torch.distributed._tools.mem_tracker import MemTracker

    class TotalsTracker(MemTracker):
        def _update_peak_stats(self, peak_state) -> None:
            for dev, snap in self._curr_mem_snap.items():
                if self._peak_mem.get(dev, 0) < snap["Total"]:
                    self._peak_mem[dev] = snap["Total"]
                    self._peak_mem_snap[dev] = dict(snap)

    return TotalsTracker()


class _TraceMeter:
    """MemTracker's per-device totals on fake tensors (entered inside the FakeTensorMode)."""

    def __init__(self, device):
        self.device, self.tracker = torch.device(device), _totals_tracker()

    def _total(self, kind: str) -> float:
        snap = self.tracker.get_tracker_snapshot(kind)
        return snap.get(self.device, {}).get("Total", 0) / GiB

    def next_call(self):
        self.tracker.reset_mod_stats()  # per-module statistics of the last forward (it refuses a second otherwise)

    def reset(self):
        t = self.tracker
        self.next_call()
        t._peak_mem_snap = t.get_tracker_snapshot()  # MemTracker has no public peak reset
        t._peak_mem = {d: s["Total"] for d, s in t._peak_mem_snap.items()}

    def peak(self) -> float:
        return self._total("peak")

    def now(self) -> float:
        return self._total("current")


@contextlib.contextmanager
def _trace_patches():
    """Two of PyTorch's internals that do not run on fake tensors, made to (restored on exit): DTensor's
    sharding propagation would run its global-shape shadow ops in the tracker's own fake mode, which
    then counts them as real memory (an optimizer step ~27x too large), so it gets its own; and the
    weight loader computes each shard's offsets with small tensors it reads back, which fake tensors
    cannot (integer arithmetic: run for real)."""
    import torch.distributed._state_dict_utils as sd_utils
    import torch.distributed.tensor._sharding_prop as sharding_prop
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    detect, offsets = sharding_prop.detect_fake_mode, sd_utils.compute_local_shape_and_global_offset

    def real_offsets(*args, **kwargs):
        with unset_fake_temporarily():
            return offsets(*args, **kwargs)

    sharding_prop.detect_fake_mode = lambda *a, **k: None
    sd_utils.compute_local_shape_and_global_offset = real_offsets
    try:
        yield
    finally:
        sharding_prop.detect_fake_mode, sd_utils.compute_local_shape_and_global_offset = detect, offsets


@contextlib.contextmanager
def _default_dtype(dtype):
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _upcast(model: torch.nn.Module) -> None:
    """model.to(torch.float32), parameter by parameter (Module.to would swap fake tensors that the
    tracker holds weak references to)."""
    for m in model.modules():
        for k, p in m._parameters.items():
            if p is not None:
                m._parameters[k] = torch.nn.Parameter(p.detach().to(torch.float32), requires_grad=p.requires_grad)


def _inputs(arch: dict, rows: int, num_tokens: tuple[int, int], device) -> dict:
    img, txt = num_tokens
    z = lambda *shape: torch.randn(*shape, device=device)  # noqa: E731
    return dict(hidden_states=z(rows, img, arch["in_channels"]), encoder_hidden_states=z(rows, txt, arch["joint_attention_dim"]),
                pooled_projections=z(rows, arch["pooled_projection_dim"]), timestep=torch.full((rows,), 0.5, device=device),
                guidance=torch.full((rows,), GUIDANCE, device=device), txt_ids=torch.zeros(txt, 3, device=device),
                img_ids=torch.zeros(img, 3, device=device), return_dict=False)


def measure_phases(arch: dict, *, world: int = 8, batches=(1, 12), sample_rows: int = 24,
                   num_tokens: tuple[int, int] = (2025, 512), checkpointing: bool = True, trace: bool = True,
                   device: str = "cuda", on_phase: Callable[[dict], None] | None = None) -> dict[str, float]:
    """Peak GiB of each phase (and seconds per training step when not traced), rank 0 of `world`:
    'start-up (obvious order)', 'start-up: weights', 'training step (R rows)' and 'optimizer step (R
    rows)' for each R in `batches` (the second of two steps: AdamW state exists), 'sampling (gathered,
    S rows)' and 'sampling (per forward, S rows)'. `on_phase(results)` is called after each phase."""
    import torch.distributed as tdist
    from diffusers import FluxTransformer2DModel
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from .startup import sharded_transformer

    if tdist.is_initialized():
        raise RuntimeError("measure_phases needs a process without a process group")
    dev = torch.device("cpu") if trace else torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cuda.enable_cudnn_sdp(False)  # config/flux.yaml's setting (benchmarks/README.md)
    tdist.init_process_group("fake", rank=0, world_size=world, store=FakeStore())
    out: dict[str, float] = {}

    def record(key, value):
        out[key] = float(f"{value:.5g}")
        if on_phase:
            on_phase(dict(out))

    try:
        mesh = init_device_mesh(dev.type, (world,))  # outside FakeTensorMode (torchtitan's order)
        fake = FakeTensorMode() if trace else contextlib.nullcontext()
        with _trace_patches() if trace else contextlib.nullcontext(), fake:
            meter = _TraceMeter(dev) if trace else _CudaMeter(dev) if dev.type == "cuda" else _NoMeter(dev)
            with meter.tracker if trace else contextlib.nullcontext():
                # ---- start-up in the obvious order: the whole model as loaded (bf16), upcast, then sharded
                meter.reset()
                with torch.device(dev), _default_dtype(torch.bfloat16):
                    model = FluxTransformer2DModel(**arch)
                _upcast(model)
                dist.shard(model, dev, torch.bfloat16, mesh=mesh)
                record("start-up (obvious order)", meter.peak())
                del model
                gc.collect()  # FSDP's module hooks hold reference cycles: free the model now, not later
                # ---- start-up sharded first (egrpo.startup): rank 0's stored bf16 weights on the host
                # (in a trace: on a fake GPU, so that only what reaches the compute device is counted)
                host = torch.device("cuda" if trace else "cpu")
                with torch.device("meta"):
                    shapes = FluxTransformer2DModel(**arch).state_dict()
                stored = {k: torch.empty(v.shape, dtype=torch.bfloat16, device=host) for k, v in shapes.items()}
                meter.reset()
                model = sharded_transformer(None, dev, load_dtype=torch.bfloat16, compute_dtype=torch.bfloat16,
                                            gradient_checkpointing=checkpointing, mesh=mesh, arch=arch,
                                            state_dict=stored)
                record("start-up: weights", meter.peak())
                del stored
                if not trace:
                    with torch.no_grad():  # finite weights for the timed steps
                        for p in model.parameters():
                            p.to_local().normal_(0, 0.02)
                params = [p for p in model.parameters() if p.requires_grad]
                opt = torch.optim.AdamW(params, lr=1e-5, foreach=True)
                # ---- training steps
                for rows in batches:
                    kwargs = _inputs(arch, rows, num_tokens, dev)
                    for _ in range(2):  # the second step has AdamW state: the steady state
                        meter.reset()
                        t0 = time.perf_counter()
                        model(**kwargs)[0].float().square().mean().backward()
                        fwd_bwd = meter.peak()
                        seconds = time.perf_counter() - t0
                        meter.reset()
                        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
                        opt.step()
                        opt.zero_grad(set_to_none=True)
                        opt_step = meter.peak()
                    record(f"training step ({rows} rows)", fwd_bwd)
                    record(f"optimizer step ({rows} rows)", opt_step)
                    if not trace:
                        record(f"s/training step ({rows} rows)", seconds)
                    del kwargs
                # ---- sampling: no-grad forwards, the model gathered once or per forward
                kwargs = _inputs(arch, sample_rows, num_tokens, dev)
                for name, keep in (("gathered", True), ("per forward", False)):
                    meter.reset()
                    t0 = time.perf_counter()
                    with torch.no_grad(), dist.gathered(model, keep):
                        for _ in range(2):
                            meter.next_call()
                            model(**kwargs)
                        peak = meter.peak()
                    record(f"sampling ({name}, {sample_rows} rows)", peak)
                    if not trace:
                        record(f"s/sampling forward ({name}, {sample_rows} rows)", (time.perf_counter() - t0) / 2)
        return out
    finally:
        tdist.destroy_process_group()


def planned_phases(arch: dict, *, world: int, batches=(1, 12), sample_rows: int = 24, height: int = 720,
                   text_tokens: int = 512, checkpointing: bool = True, gpu_gib: float = 79.0) -> dict[str, float]:
    """egrpo.memory's plan of the transformer's part of each phase `measure_phases` measures (the VAE,
    reward models and text encoders are not in the measurement), keyed alike; sampling both ways."""
    from .config import resolve

    # Flow-GRPO trains every row at every step from its own noise: micro_batch distinct rows a forward;
    # each rank gets enough prompts to fill the largest forward measured
    group = 12
    share = -(-max(sample_rows, *batches) // group)

    def cfg(rows):
        return resolve({"name": "plan", "method": {"name": "flowgrpo", "group_size": group},
                        "rewards": {"names": ["brightness"]},
                        "model": {"path": "/nonexistent", "height": height, "width": height,
                                  "max_sequence_length": text_tokens, "gradient_checkpointing": checkpointing},
                        "train": {"prompts": ["a"], "micro_batch": rows, "sample_batch": sample_rows, "parallel": "fsdp",
                                  "prompts_per_iteration": world * share}})

    out = {}
    for rows in batches:
        p = plan(cfg(rows), world, gpu_gib, arch=arch)
        out[f"training step ({rows} rows)"] = total(p["training step"], transformer_only=True)
        out[f"optimizer step ({rows} rows)"] = total(p["optimizer step"], transformer_only=True)
    p = plan(cfg(batches[0]), world, gpu_gib, arch=arch)
    out["start-up: weights"] = total(p["start-up: weights"], transformer_only=True)
    for name, room in (("gathered", float("inf")), ("per forward", 0.0)):
        out[f"sampling ({name}, {sample_rows} rows)"] = total(plan(cfg(batches[0]), world, room, arch=arch)["sampling"],
                                                              transformer_only=True)
    return {k: float(f"{v:.5g}") for k, v in out.items()}
