"""MixGRPO's HPS+CLIP advantages under the two weightings: each reward normalised within its group and
summed 1:1 (the harness's former MixGRPO, G's rule) or with weights normalised to sum 1, 0.5:0.5
(M train_grpo_flux.py:764-767), then clamped to +-5. Rollouts of MixGRPO's plan from config/flux.yaml
(T = 25, the window at its first start, G = 12) on the world's base model, scored by the world's
HPS- and CLIP-role rewards (world_preference, world_alignment) on its training captions.

The weighted sum is exactly half under 0.5:0.5 before the clamp; AdamW is invariant to a constant
scale of the loss (up to its eps and the grad-norm clip), so what can differ is the clamp: a group-
normalised reward of G samples lies within +-(G-1)/sqrt(G) (3.18 for G = 12), so the 1:1 sum reaches
+-6.35 and the clamp can bind, the 0.5:0.5 sum stays within +-3.18 and it never does.

    python benchmarks/mixgrpo_weights.py --model DIR [--prompts 48]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml

from egrpo.config import resolve
from egrpo.methods import build_plan
from egrpo.objectives import group_advantages, rollout_advantages
from egrpo.rewards import build_reward
from egrpo.rollout import Prompt, sample_iteration, score_sample
from egrpo.flux import FluxBackbone
from egrpo.world.shapes import TRAIN_CAPTIONS

ROOT = Path(__file__).resolve().parents[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--prompts", type=int, default=48)
    p.add_argument("--iterations", type=int, default=2, help="rollouts per prompt (fresh noise each)")
    args = p.parse_args()
    torch.set_num_threads(1)
    raw = yaml.safe_load((ROOT / "config" / "flux.yaml").read_text())["training"]
    raw["model"] = {**raw["model"], "path": str(args.model), "height": 32, "width": 32, "max_sequence_length": 10}
    raw["train"] = {**raw["train"], "prompts": [c.text for c in TRAIN_CAPTIONS]}
    raw["rewards"] = {"names": ["world_preference", "world_alignment"], "weights": [1.0, 1.0]}
    cfg = resolve(raw, "mixgrpo")  # config/flux.yaml's MixGRPO: weights normalised
    weightings = {"1:1 (sum)": resolve(raw, "mixgrpo", overrides=["rewards.normalise_weights=false"]).rewards.weight_map(),
                  "0.5:0.5 (M: normalised)": cfg.rewards.weight_map()}
    bb = FluxBackbone.from_pretrained(args.model, dtype="fp32", max_sequence_length=10)
    plan = build_plan(cfg.method).for_iteration(0)
    rewards = {n: build_reward(n) for n in cfg.rewards.names}
    captions = [c.text for c in TRAIN_CAPTIONS][: args.prompts]
    unclamped = {k: [] for k in weightings}
    parts = {n: [] for n in cfg.rewards.names}  # each reward's group-normalised advantages
    for it in range(args.iterations):
        prompts = [Prompt(k, k, t, bb.encode_prompts([t])) for k, t in enumerate(captions)]
        sample = sample_iteration(bb, plan, prompts, ("mixgrpo_weights", it), cfg.method.group_size, 32, 32)
        score_sample(sample, rewards, 256)
        for grp in sample.groups:
            for name, w in weightings.items():
                unclamped[name].append(rollout_advantages(grp.rewards, w, cfg.rewards.aggregation, clip=float("inf")))
            for tail in grp.rewards.values():
                for n in parts:
                    parts[n].append(group_advantages(tail[n]))
    clip = cfg.optim.adv_clip
    print(f"{args.iterations} x {len(captions)} groups of {cfg.method.group_size} (MixGRPO, T = {cfg.method.num_steps}), "
          f"clamp +-{clip:g}\n")
    print("| weighting | weights | sd of A | max abs A | samples clamped | groups with a clamped sample | "
          "mean abs change by the clamp |")
    print("|---|---|---|---|---|---|---|")
    for name, adv in unclamped.items():
        a = torch.stack(adv)
        clamped = a.abs() > clip
        change = (a - a.clamp(-clip, clip)).abs()
        print(f"| {name} | {', '.join(f'{v:g}' for v in weightings[name].values())} | {float(a.std()):.3f} | "
              f"{float(a.abs().max()):.3f} | {float(clamped.double().mean()):.4f} | "
              f"{float(clamped.any(1).double().mean()):.3f} | {float(change.mean()):.5f} |")
    one, half = torch.stack(unclamped["1:1 (sum)"]), torch.stack(unclamped["0.5:0.5 (M: normalised)"])
    print(f"\nunclamped, 0.5:0.5 / 1:1 = {float((half / one)[one.abs() > 1e-6].mean()):.4f}; correlation of the two "
          f"rewards' group-normalised advantages: {float(torch.corrcoef(torch.stack([torch.cat(v) for v in parts.values()]))[0, 1]):.3f}")


if __name__ == "__main__":
    main()
