"""The memory plan of `egrpo memory` against PyTorch's FSDPMemTracker on FLUX.1-dev's architecture
(11.9 B parameters, 720x720 = 2,025 image tokens + 512 text tokens, 8 ranks, bf16 compute with fp32
master weights), traced in one CPU process under FakeTensorMode: nothing is allocated, each case
takes 1-2 minutes on 2 cores.

    python benchmarks/memory_plan.py [--cases b1-ckpt b12-ckpt b12]
"""

from __future__ import annotations

import argparse
import time

from egrpo.config import resolve
from egrpo.memory import FLUX_DEV, plan, trace_fsdp_step

CASES = {"b1-ckpt": (1, True), "b12-ckpt": (12, True), "b1": (1, False), "b12": (12, False)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=["b1-ckpt", "b12-ckpt"], choices=list(CASES))
    args = p.parse_args()
    print("| case | tracker GiB | plan GiB (transformer) | plan / tracker | trace s |")
    print("|---|---|---|---|---|")
    for case in args.cases:
        batch, ckpt = CASES[case]
        t0 = time.perf_counter()
        traced = trace_fsdp_step(FLUX_DEV, world=8, batch=batch, num_tokens=(2025, 512), checkpointing=ckpt)["Total"]
        seconds = time.perf_counter() - t0
        cfg = resolve({"name": "plan", "method": {"name": "dancegrpo"}, "rewards": {"names": ["brightness"]},
                       "model": {"path": "/nonexistent/FLUX.1-dev", "height": 720, "width": 720,
                                 "max_sequence_length": 512, "gradient_checkpointing": ckpt},
                       "train": {"prompts": ["a"], "micro_batch": batch, "parallel": "fsdp"}})
        planned = sum(c.gib for c in plan(cfg, gpus=8)["training step"] if c.name != "VAE")
        print(f"| {case} | {traced:.2f} | {planned:.2f} | {planned / traced:.2f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
