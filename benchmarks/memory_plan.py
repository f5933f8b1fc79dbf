"""The memory plan of `egrpo memory` against PyTorch's memory tracker on FLUX.1-dev's architecture, phase by
phase (11.9 B parameters, 720x720 = 2,025 image tokens + 512 text tokens, rank 0 of 8, bf16 compute with fp32
master weights, gradient checkpointing): start-up in the obvious order and sharded first, training and
optimizer steps at 1 and 12 rows, sampling at 24 rows with the model gathered once or per forward. Traced
in one CPU process under FakeTensorMode (egrpo.memtrace): nothing is allocated; minutes on a laptop.

    python benchmarks/memory_plan.py [--world 8] [--batches 1 12] [--json FILE]

The transformer's part only: the VAE, reward models and text encoders are in the plan, not in the trace.
"""

from __future__ import annotations

import argparse
import json
import time

from egrpo.memory import FLUX_DEV
from egrpo.memtrace import measure_phases, planned_phases


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", type=int, default=8)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 12])
    p.add_argument("--sample-rows", type=int, default=24)
    p.add_argument("--json", default=None, help="also write the measured and planned phases here")
    args = p.parse_args()
    t0 = time.perf_counter()
    traced = measure_phases(FLUX_DEV, world=args.world, batches=tuple(args.batches), sample_rows=args.sample_rows,
                            num_tokens=(2025, 512), trace=True)
    seconds = time.perf_counter() - t0
    planned = planned_phases(FLUX_DEV, world=args.world, batches=tuple(args.batches), sample_rows=args.sample_rows)
    print(f"FLUX.1-dev, rank 0 of {args.world}, 720x720 + 512 text tokens, traced in {seconds:.0f} s\n")
    print("| phase | tracker GiB | plan GiB | plan / tracker |")
    print("|---|---|---|---|")
    for phase, gib in traced.items():
        plan = planned.get(phase)
        ratio = f"{plan / gib:.2f}" if plan else "-"
        print(f"| {phase} | {gib:.2f} | {plan:.2f} | {ratio} |" if plan else f"| {phase} | {gib:.2f} | - | - |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"traced": traced, "planned": planned, "seconds": seconds}, f, indent=1)


if __name__ == "__main__":
    main()
