"""Execute an IterationPlan for a batch of prompts (sampling phase) and turn the result into
training units.

Randomness: row r of rollout `key` for prompt `p` draws from generator(*seed_key, p, key, r), the
group-shared noise from generator(*seed_key, p, "shared") and the anchor from (..., "anchor"), so a
sample never depends on batching, rank count or the order prompts are processed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .flux import FluxBackbone, PromptEmbeds
from .plans import IterationPlan, Rollout
from .sampler import Lane, initial_noise, run_lanes
from .seeding import generator


@dataclass
class GroupSample:
    """One rollout's G trajectories for one prompt: head latents/log-probs and final images per tail."""

    rollout: Rollout
    sigmas: torch.Tensor
    prompt_id: int
    embeds: PromptEmbeds  # one row
    latents: list[torch.Tensor]  # [G, N, C] at each head boundary
    log_probs: torch.Tensor  # [G, K_head]
    images: list[torch.Tensor]  # one [G, 3, H, W] per tail (or the head's own end)


@dataclass
class TrainUnit:
    """Trained transitions of one group sharing step i -> j: one forward over the distinct inputs x,
    then row k is scored as the transition x[index[k]] -> prev[k]."""

    sigmas: torch.Tensor
    i: int
    j: int
    rule: str
    eta: float
    embeds: PromptEmbeds
    x: torch.Tensor  # [U, N, C]
    index: torch.Tensor  # [M] into x
    prev: torch.Tensor  # [M, N, C]
    old_log_prob: torch.Tensor  # [M]
    advantages: torch.Tensor  # [M]


@torch.no_grad()
def sample_iteration(backbone: FluxBackbone, plan: IterationPlan, prompts: list[tuple[int, PromptEmbeds]],
                     seed_key: tuple, group_size: int, height: int, width: int,
                     max_batch: int | None = None, lockstep: bool = True) -> list[GroupSample]:
    """Sample every rollout of `plan` for each (prompt id, one-row embeds), all prompts in lockstep:
    anchors first, then every group's head, then every tail, each phase batched by `run_lanes`.
    lockstep=False runs each lane on its own (the unbatched baseline of benchmarks/)."""
    def run(lanes):
        for chunk in ([lanes] if lockstep else [[lane] for lane in lanes]):
            run_lanes(backbone, chunk, height=height, width=width, max_batch=max_batch)

    def rollout_sigmas(r: Rollout) -> torch.Tensor:
        return plan.sigmas if r.sigmas is None else r.sigmas

    anchors: dict[int, dict[int, torch.Tensor]] = {}
    if plan.anchor is not None:
        lanes = [Lane(e, plan.sigmas, plan.anchor,
                      initial_noise(backbone, [generator(*seed_key, pid, "anchor")], height, width))
                 for pid, e in prompts]
        run(lanes)
        anchors = {pid: {t.i: x for t, x in zip(plan.anchor, lane.latents)} for (pid, _), lane in zip(prompts, lanes)}

    heads = []
    for pid, e in prompts:
        for r in plan.rollouts:
            gens = [generator(*seed_key, pid, r.key, row) for row in range(group_size)]
            if r.source == "anchor":
                if r.start not in anchors.get(pid, {}):
                    raise ValueError(f"rollout {r.key} starts from anchor step {r.start}, which the anchor does not visit")
                x = anchors[pid][r.start].expand(group_size, -1, -1)
            elif r.source == "shared_noise":
                x = initial_noise(backbone, [generator(*seed_key, pid, "shared")], height, width).expand(group_size, -1, -1)
            else:
                x = initial_noise(backbone, gens, height, width)
            heads.append((pid, e, r, Lane(e, rollout_sigmas(r), r.head, x, gens)))
    run([lane for *_, lane in heads])

    tails = [[Lane(e, rollout_sigmas(r), tail, lane.x, keep_latents=False) for tail in r.tails]
             for pid, e, r, lane in heads]
    run([t for ts in tails for t in ts])

    finals = [[lane.x] if not r.tails else [t.x for t in ts] for (_, _, r, lane), ts in zip(heads, tails)]
    flat = torch.cat([x for fs in finals for x in fs])
    images = backbone.decode(flat, height, width)  # chunked by the backbone's decode_batch
    out, pos = [], 0
    for (pid, e, r, lane), fs in zip(heads, finals):
        imgs = []
        for _ in fs:
            imgs.append(images[pos:pos + group_size])
            pos += group_size
        traj = lane.trajectory()
        out.append(GroupSample(r, rollout_sigmas(r), pid, e, traj.latents, traj.log_probs, imgs))
    return out


def trained_rows(group: GroupSample, seed_key: tuple, group_size: int) -> dict[int, list[int]]:
    """head transition index -> the rows that train it (all rows, or a random subset per row)."""
    r = group.rollout
    per_k: dict[int, list[int]] = {k: [] for k in r.trainable}
    for row in range(group_size):
        ks = r.trainable
        if r.train_per_row is not None:
            g = generator(*seed_key, group.prompt_id, r.key, "train", row)
            perm = torch.randperm(len(r.trainable), generator=g)[: r.train_per_row]
            ks = [r.trainable[int(p)] for p in perm.sort().values]
        for k in ks:
            per_k[k].append(row)
    return {k: rows for k, rows in per_k.items() if rows}


def train_units(group: GroupSample, advantages: torch.Tensor, seed_key: tuple, micro_batch: int) -> list[TrainUnit]:
    """Training units of one group. Rows whose input latent is identical (E-GRPO's branches off the
    anchor, MixGRPO's shared ODE prefix) share one forward pass."""
    units = []
    advantages = advantages.to(group.log_probs.device)  # rewards score on the CPU; the latents may be on a GPU
    for k, rows in trained_rows(group, seed_key, len(advantages)).items():
        t = group.rollout.head[k]
        x_in = group.latents[k][rows]
        shared = all(torch.equal(x_in[0], x_in[m]) for m in range(1, len(rows)))
        n = len(rows)
        chunks = [range(n)] if shared else [range(lo, min(lo + micro_batch, n)) for lo in range(0, n, micro_batch)]
        for sel in map(list, chunks):
            rows_sel = [rows[m] for m in sel]
            x = x_in[sel[:1]] if shared else x_in[sel]
            index = torch.zeros(len(sel), dtype=torch.long) if shared else torch.arange(len(sel))
            units.append(TrainUnit(group.sigmas, t.i, t.j, t.rule, t.eta, group.embeds, x, index,
                                   group.latents[k + 1][rows_sel], group.log_probs[rows_sel, k],
                                   advantages[rows_sel]))
    return units
