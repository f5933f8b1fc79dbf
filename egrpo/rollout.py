"""Execute an IterationPlan for a batch of prompts (sampling phase) and turn the result into
training units.

Randomness: row r of rollout `key` for the prompt in slot `s` of the iteration draws from
generator(*seed_key, s, key, r) (in a tree, node n after head transition k from (..., s, key,
"node", k, n)), the group-shared noise from generator(*seed_key, s, "shared") and the anchor (or
probe) from (..., s, "anchor"), so a sample never depends on batching, rank count or processing
order, and a prompt repeated in one iteration (a small prompt set) gets fresh noise in each slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch

from .flux import FluxBackbone, PromptEmbeds
from .methods import MethodConfig
from .objectives import Aggregation, clipped_ratio_loss, rollout_advantages, tree_advantages
from .plans import IterationPlan, Rollout
from .sampler import Lane, initial_noise, run_lanes
from .sde import sde_step, transition_std
from .seeding import generator
from .transitions import make_transitions

FINAL = "final"  # image key of a rollout without tails: its head's own end


@dataclass(frozen=True)
class Prompt:
    """One slot of an iteration's global prompt list: seeds derive from the slot, text from the id."""

    slot: int
    id: int
    text: str
    embeds: PromptEmbeds  # one row


@dataclass
class GroupSample:
    """One rollout's G trajectories for one prompt; its rewards and advantages travel with it."""

    rollout: Rollout
    index: int  # the rollout's position in the plan
    prompt: Prompt
    sigmas: torch.Tensor
    latents: list[torch.Tensor]  # [G, N, C] at each head boundary
    log_probs: torch.Tensor  # [G, K_head]
    images: dict[str, torch.Tensor]  # tail key (or FINAL) -> [G, 3, H, W]
    rewards: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # tail -> reward -> [G]
    advantages: torch.Tensor | None = None  # [G], or [G, K_head] per transition (a tree's edges)


@dataclass
class IterationSample:
    """What one iteration sampled on this rank: the groups, and per prompt slot the probe image (the
    current policy's ODE sample: E-GRPO's anchor, an extra lane for the others) with its rewards."""

    groups: list[GroupSample]
    prompts: dict[int, Prompt]  # slot -> prompt
    probes: dict[int, torch.Tensor] = field(default_factory=dict)  # slot -> [1, 3, H, W]
    probe_rewards: dict[int, dict[str, float]] = field(default_factory=dict)
    probe_passes: int = 0  # passes of extra probe lanes (not part of the method's compute)


@dataclass
class TrainUnit:
    """Trained transitions of one group sharing step i -> j within one optimizer step (`update`): one
    forward over the distinct inputs x, then row k is scored as the transition x[index[k]] -> prev[k],
    its loss multiplied by `weight` (TempFlow-GRPO's noise level, BranchGRPO's per-tree scale)."""

    update: int
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
    weight: float = 1.0


def shares_input(rollout: Rollout, k: int) -> bool:
    """Do all rows of a rollout enter head transition k from the same latent? Yes when they start from
    one latent (the anchor's, or one shared noise) and nothing stochastic came before k."""
    return rollout.source in ("anchor", "shared_noise") and not any(t.stochastic for t in rollout.head[:k])


@torch.no_grad()
def sample_iteration(backbone: FluxBackbone, plan: IterationPlan, prompts: list[Prompt], seed_key: tuple,
                     group_size: int, height: int, width: int, max_batch: int | None = None,
                     lockstep: bool = True, probe: bool = False) -> IterationSample:
    """Sample every rollout of `plan` for each prompt, all prompts in lockstep: anchors first, then
    every group's head, then every tail, each phase batched by `run_lanes`. With `probe`, a plan
    without an anchor also runs one ODE sample per prompt (counted apart, in `probe_passes`).
    lockstep=False runs each lane on its own (the unbatched baseline of benchmarks/)."""
    def run(lanes):
        for chunk in ([lanes] if lockstep else [[lane] for lane in lanes]):
            run_lanes(backbone, chunk, height=height, width=width, max_batch=max_batch)

    def noise(p: Prompt, name: str) -> torch.Tensor:
        return initial_noise(backbone, [generator(*seed_key, p.slot, name)], height, width)

    anchor = plan.anchor if plan.anchor is not None else (make_transitions(len(plan.sigmas) - 1) if probe else None)
    anchors: dict[int, Lane] = {}
    probe_passes = 0
    # a tree rooted on the anchor takes the anchor's velocity at its root: the release's branches
    # share the main trajectory's forward
    reuse = plan.anchor is not None and any(r.splits and r.source == "anchor" for r in plan.rollouts)
    if anchor is not None:
        anchors = {p.slot: Lane(p.embeds, plan.sigmas, anchor, noise(p, "anchor"), record_velocity=reuse)
                   for p in prompts}
        before = backbone.passes
        run(list(anchors.values()))
        if plan.anchor is None:
            probe_passes = backbone.passes - before
            backbone.passes = before  # a measurement, not the method's compute
    visited = {slot: {t.i: x for t, x in zip(anchor, lane.latents)} for slot, lane in anchors.items()}

    heads: list[tuple[int, Prompt, Rollout, Lane]] = []
    for p in prompts:
        for index, r in enumerate(plan.rollouts):
            tree = r.tree(group_size)
            gens = None if tree else [generator(*seed_key, p.slot, r.key, row) for row in range(group_size)]
            if r.source == "anchor":
                if plan.anchor is None or r.start not in visited[p.slot]:
                    raise ValueError(f"rollout {r.key} starts from anchor step {r.start}, which the anchor does not visit")
                x = visited[p.slot][r.start].expand(group_size, -1, -1)
            elif r.source == "shared_noise":
                x = noise(p, "shared").expand(group_size, -1, -1)
            else:
                x = initial_noise(backbone, gens, height, width)
            sigmas = plan.sigmas if r.sigmas is None else r.sigmas
            nodes = (lambda k, n, slot=p.slot, key=r.key: generator(*seed_key, slot, key, "node", k, n)) if tree else None
            lane = Lane(p.embeds, sigmas, r.head, x, gens, tree=tree, node_generator=nodes)
            if tree and r.source == "anchor" and r.sigmas is None:
                lane.advance(anchors[p.slot].velocities[[t.i for t in anchor].index(r.start)])
            heads.append((index, p, r, lane))
    run([lane for *_, lane in heads])

    tails = [{t.key: Lane(p.embeds, lane.sigmas, t.transitions, lane.x, keep_latents=False, origin=(p.slot, r.key))
              for t in r.tails} for _, p, r, lane in heads]
    run([lane for ts in tails for lane in ts.values()])

    # ---- decode every final latent and probe in one chunked call, then hand each its images
    keys, finals = [], []
    for (_, _, r, lane), ts in zip(heads, tails):
        keys.append(list(ts) or [FINAL])
        finals += [t.x for t in ts.values()] or [lane.x0_hat if r.decode == "x0_hat" else lane.x]
    finals += [lane.x for lane in anchors.values()]
    images = iter(backbone.decode(torch.cat(finals), height, width).split([len(x) for x in finals]))
    groups = []
    for (index, p, r, lane), names in zip(heads, keys):
        traj = lane.trajectory()
        groups.append(GroupSample(r, index, p, lane.sigmas, traj.latents, traj.log_probs,
                                  {name: next(images) for name in names}))
    return IterationSample(groups, {p.slot: p for p in prompts}, {slot: next(images) for slot in anchors},
                           probe_passes=probe_passes)


def trained_rows(group: GroupSample, seed_key: tuple, group_size: int) -> dict[int, list[int]]:
    """head transition index -> the rows that train it (all rows, or a random subset per row)."""
    r = group.rollout
    per_k: dict[int, list[int]] = {k: [] for k in r.trainable}
    for row in range(group_size):
        ks = r.trainable
        if r.train_per_row is not None:
            g = generator(*seed_key, group.prompt.slot, r.key, "train", row)
            perm = torch.randperm(len(r.trainable), generator=g)[: r.train_per_row]
            ks = [r.trainable[int(p)] for p in perm.sort().values]
        for k in ks:
            per_k[k].append(row)
    return {k: rows for k, rows in per_k.items() if rows}


def group_advantages_of(group: GroupSample, weights: Mapping[str, float], mode: Aggregation, clip: float) -> torch.Tensor:
    """A scored group's advantages: normalised within the group ([G]), or per depth of its tree for
    edge training ([G, K]); summed over tails and rewards, the sum clamped to +-clip."""
    r = group.rollout
    if r.edges is None:
        return rollout_advantages(group.rewards, weights, mode, clip=clip, eps=r.advantage_eps, std=r.advantage_std)
    tree = r.tree(len(group.log_probs))

    def per_depth(rewards):
        return tree_advantages(rewards, tree, len(r.head), node_reward=r.edges.node_reward,
                               log_probs=group.log_probs.cpu(), eps=r.advantage_eps)
    return rollout_advantages(group.rewards, weights, mode, clip=clip, normalise=per_depth)


def update_of(method: MethodConfig, group: GroupSample, row: int) -> int:
    """Which optimizer step of the iteration trains this row of this group (see MethodConfig.update)."""
    if method.update == "rollout":
        return group.index
    if method.update == "samples":
        return row // method.samples_per_update
    if method.update == "edges":
        raise ValueError(f"update = edges steps every N edges of a tree; rollout {group.rollout.key} has no edges")
    return 0


def loss_weight(rollout: Rollout, sigmas: torch.Tensor, k: int) -> float:
    """TempFlow-GRPO's noise-level weight c * std of head transition k (1 without it)."""
    if rollout.noise_weight is None:
        return 1.0
    t = rollout.head[k]
    return rollout.noise_weight * float(transition_std(sigmas, t.i, t.j, rule=t.rule, eta=t.eta))


def train_units(group: GroupSample, seed_key: tuple, micro_batch: int, method: MethodConfig) -> list[TrainUnit]:
    """Training units of one group (its advantages set). Rows entering a transition from one shared
    latent (E-GRPO's branches off the anchor, MixGRPO's shared ODE prefix) share one forward pass;
    a tree's edges share their parent's (`edge_units`)."""
    if group.advantages is None:
        raise ValueError("train_units needs the group's advantages")
    if group.rollout.edges is not None:
        return edge_units(group, seed_key, micro_batch, method)
    units = []
    advantages = group.advantages.to(group.log_probs.device)  # rewards score on the CPU; latents may be on a GPU
    for k, rows in trained_rows(group, seed_key, len(advantages)).items():
        t = group.rollout.head[k]
        weight = loss_weight(group.rollout, group.sigmas, k)
        shared = shares_input(group.rollout, k)
        blocks: dict[int, list[int]] = {}
        for row in rows:
            blocks.setdefault(update_of(method, group, row), []).append(row)
        for update, block in blocks.items():
            chunks = [block] if shared else [block[lo:lo + micro_batch] for lo in range(0, len(block), micro_batch)]
            for sel in chunks:
                x = group.latents[k][sel[:1]] if shared else group.latents[k][sel]
                index = torch.zeros(len(sel), dtype=torch.long) if shared else torch.arange(len(sel))
                units.append(TrainUnit(update, group.sigmas, t.i, t.j, t.rule, t.eta, group.prompt.embeds, x, index,
                                       group.latents[k + 1][sel], group.log_probs[sel, k], advantages[sel], weight))
    return units


def trained_edges(group: GroupSample) -> list[tuple[int, int]]:
    """A tree's trained edges (head transition k, child node), in depth-first order, width-pruned
    as its EdgeTraining says (after depth pruning, which the plan's `trainable` already applied)."""
    r, g = group.rollout, len(group.log_probs)
    tree = r.tree(g)

    def first_leaf(edge):
        k, c = edge
        return c * (g // tree.nodes(k))

    edges = sorted(((k, c) for k in r.trainable for c in range(tree.nodes(k))), key=lambda e: (first_leaf(e), e[0]))
    mode, ratio = r.edges.width_pruning, r.edges.width_ratio
    last = max(k for k, _ in r.splits)
    late = [e for e in edges if e[0] > last]  # edges after the last split: whole chains, one per branch
    if not mode or not late:
        return edges
    adv = group.advantages.cpu()

    def best_first(es):  # by advantage, descending; ties keep depth-first order (Python's sort is stable)
        return sorted(es, key=lambda e: -float(adv[first_leaf(e), e[0]]))
    if mode == 1:
        kept = []
        for c in sorted({c for _, c in late}):
            chain = best_first([e for e in late if e[1] == c])
            kept += chain[:max(1, int(len(chain) * ratio))]
    else:
        ranked = best_first(late)
        keep = max(2, int(len(ranked) * ratio))
        kept = ranked[:keep // 2] + ranked[len(ranked) - (keep - keep // 2):]
    kept = set(kept)
    return [e for e in edges if e[0] <= last or e in kept]


def edge_units(group: GroupSample, seed_key: tuple, micro_batch: int, method: MethodConfig) -> list[TrainUnit]:
    """A tree's edges as training units: each edge once (its child's first leaf row stands for it),
    siblings in one optimizer step sharing their parent's forward. With update = edges the edges
    are shuffled (seeded per tree) and an AdamW step taken every `edges_per_update`."""
    r, g = group.rollout, len(group.log_probs)
    tree, spec = r.tree(g), r.edges
    edges = trained_edges(group)
    if not edges:
        return []
    if method.update == "edges":
        if spec.edges_per_update is None:
            raise ValueError(f"update = edges needs the rollout's edges_per_update ({r.key})")
        perm = torch.randperm(len(edges), generator=generator(*seed_key, group.prompt.slot, r.key, "edges"))
        update = {edges[int(e)]: pos // spec.edges_per_update for pos, e in enumerate(perm)}
    else:
        update = {e: update_of(method, group, e[1] * (g // tree.nodes(e[0]))) for e in edges}
    scale = 1.0 / len(edges) if spec.per_tree_loss else 1.0
    advantages = group.advantages.to(group.log_probs.device)
    blocks: dict[tuple[int, int], list[int]] = {}
    for k, c in edges:
        blocks.setdefault((update[(k, c)], k), []).append(c)
    units = []
    for (u, k), children in sorted(blocks.items()):
        t = r.head[k]
        rows = torch.tensor(children) * (g // tree.nodes(k))  # each child's first leaf
        parents = rows // (g // tree.nodes(k - 1))
        distinct = sorted(set(parents.tolist()))
        for lo in range(0, len(distinct), micro_batch):
            chunk = distinct[lo:lo + micro_batch]
            sel = torch.isin(parents, torch.tensor(chunk))
            index = torch.tensor([chunk.index(int(p)) for p in parents[sel]])
            x = group.latents[k][torch.tensor(chunk) * (g // tree.nodes(k - 1))]
            rs = rows[sel]
            units.append(TrainUnit(u, group.sigmas, t.i, t.j, t.rule, t.eta, group.prompt.embeds, x, index,
                                   group.latents[k + 1][rs], group.log_probs[rs, k], advantages[rs, k],
                                   scale * loss_weight(r, group.sigmas, k)))
    return units


def unit_loss(unit: TrainUnit, log_prob: torch.Tensor, clip_range: float) -> tuple[torch.Tensor, ...]:
    """A unit's PPO-clip loss rows (times its weight; a positive weight commutes with the clip's max),
    ratios and clipped flags, given the current policy's log-probs of its transitions."""
    loss, ratio, clipped = clipped_ratio_loss(log_prob, unit.old_log_prob, unit.advantages, clip_range)
    return (loss if unit.weight == 1.0 else loss * unit.weight), ratio, clipped


def merge_units(units: list[TrainUnit], micro_batch: int) -> list[TrainUnit]:
    """Units of one optimizer step that take the same transition (same i -> j, rule, noise, sigmas and
    loss weight), merged into units of at most `micro_batch` distinct inputs across groups and
    prompts: the same loss, scored by one SDE step each."""
    buckets: dict[tuple, list[list[TrainUnit]]] = {}
    for u in units:
        key = (u.update, u.i, u.j, u.rule, u.eta, tuple(u.sigmas.tolist()), u.weight)
        chunks = buckets.setdefault(key, [[]])
        if chunks[-1] and sum(len(v.x) for v in chunks[-1]) + len(u.x) > micro_batch:
            chunks.append([])
        chunks[-1].append(u)
    out = []
    for chunks in buckets.values():
        for chunk in chunks:
            if len(chunk) == 1:
                out.append(chunk[0])
                continue
            offsets = torch.tensor([0] + [len(u.x) for u in chunk[:-1]]).cumsum(0).tolist()
            first = chunk[0]
            out.append(TrainUnit(
                first.update, first.sigmas, first.i, first.j, first.rule, first.eta, _cat_embeds(chunk),
                torch.cat([u.x for u in chunk]),  # [sum U, N, C]
                torch.cat([u.index + o for u, o in zip(chunk, offsets)]),  # [sum M] into x
                torch.cat([u.prev for u in chunk]), torch.cat([u.old_log_prob for u in chunk]),
                torch.cat([u.advantages for u in chunk]), first.weight))
    return out


def pack_forwards(units: list[TrainUnit], micro_batch: int) -> list[list[TrainUnit]]:
    """Units of one optimizer step packed into training forwards of at most `micro_batch` distinct
    inputs whatever their transitions (the timestep is per row), first fit by decreasing size: a
    tree's edges at many depths, or a plan's branches at several steps, cost a few full forwards
    rather than one small forward each. A unit larger than `micro_batch` is a forward of its own."""
    forwards: list[list[TrainUnit]] = []
    sizes: list[int] = []
    for u in sorted(units, key=lambda u: -len(u.x)):  # stable: equal sizes keep their order
        slot = next((f for f, size in enumerate(sizes) if size + len(u.x) <= micro_batch), None)
        if slot is None:
            forwards.append([])
            sizes.append(0)
            slot = len(forwards) - 1
        forwards[slot].append(u)
        sizes[slot] += len(u.x)
    return forwards


def training_batches(units: list[TrainUnit], micro_batch: int, updates: int | None = None) -> list[list[list[TrainUnit]]]:
    """The iteration's units as `updates` optimizer steps (default: through the last unit's), each a
    list of packed training forwards (empty for a step with no unit here, so ranks stay aligned)."""
    n = max((u.update + 1 for u in units), default=0) if updates is None else updates
    return [pack_forwards(merge_units([u for u in units if u.update == k], micro_batch), micro_batch)
            for k in range(n)]


def forward_inputs(forward: list[TrainUnit]) -> tuple[torch.Tensor, torch.Tensor, PromptEmbeds]:
    """The packed forward's latents [sum U, N, C], per-row sigmas [sum U] and conditioning."""
    x = torch.cat([u.x for u in forward])
    sigma = torch.cat([u.sigmas[u.i].float().expand(len(u.x)) for u in forward])
    return x, sigma, _cat_embeds(forward)


def forward_loss(forward: list[TrainUnit], v: torch.Tensor, clip_range: float) -> tuple[torch.Tensor, ...]:
    """Loss rows, ratios and clipped flags of a packed forward's units given its velocities: each
    unit's transitions scored by their own SDE step."""
    parts = []
    for u, v_u in zip(forward, v.split([len(u.x) for u in forward])):
        step = sde_step(u.x[u.index], v_u[u.index], u.sigmas, u.i, u.j, rule=u.rule, eta=u.eta, prev_sample=u.prev)
        parts.append(unit_loss(u, step.log_prob, clip_range))
    return tuple(torch.cat(t) for t in zip(*parts))


def _cat_embeds(units: list[TrainUnit]) -> PromptEmbeds:
    """The units' conditioning, one row per distinct input (a unit's single prompt row repeated)."""
    if len(units) == 1 and len(units[0].embeds) in (1, len(units[0].x)):
        return units[0].embeds
    embeds = [u.embeds.select([0] * len(u.x)) if len(u.embeds) != len(u.x) else u.embeds for u in units]
    return PromptEmbeds(torch.cat([e.prompt for e in embeds]), torch.cat([e.pooled for e in embeds]),
                        units[0].embeds.text_ids)


def score_sample(sample: IterationSample, rewards: Mapping[str, object], batch: int) -> None:
    """Score every group image and probe with every reward (one chunked call per reward) and store
    the rewards on their groups and probes."""
    from .rewards import score

    items = [(g, key, im) for g in sample.groups for key, im in g.images.items()]
    images = [im for *_, im in items] + list(sample.probes.values())
    texts = [g.prompt.text for g, _, im in items for _ in range(len(im))]
    texts += [sample.prompts[slot].text for slot in sample.probes]
    if not images:
        return
    sizes = [len(im) for im in images]
    flat = torch.cat(images)
    for name, fn in rewards.items():
        parts = score(fn, name, flat, texts, batch=batch).split(sizes)
        for (g, key, _), part in zip(items, parts):
            g.rewards.setdefault(key, {})[name] = part
        for slot, part in zip(sample.probes, parts[len(items):]):
            sample.probe_rewards.setdefault(slot, {})[name] = float(part[0])
