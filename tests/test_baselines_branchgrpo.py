"""BranchGRPO's plan against its release (Fredreic1849/BranchGRPO fastvideo/train_branchgrpo_flux.py
and scripts/finetune/finetune_flux_branchgrpo_8gpus.sh): the tree it samples, the edges it trains,
per-depth advantages, depth and width pruning, and an AdamW step every N shuffled edges."""

import math

import pytest
import torch

from baselines.branchgrpo import BranchGRPOMethod, BranchGRPOPlan
from egrpo.cost import StandInBackbone, stand_in_embeds
from egrpo.objectives import tree_advantages
from egrpo.rollout import Prompt, group_advantages_of, sample_iteration, train_units, trained_edges


def test_the_releases_tree_of_dancegrpo_steps():
    (r,) = BranchGRPOPlan(BranchGRPOMethod()).for_iteration(0).rollouts
    assert [(t.i, t.j, t.rule, t.eta) for t in r.head] == [(i, i + 1, "dance_grpo", 0.3) for i in range(20)]
    assert [i for i, t in enumerate(r.head) if t.noise_scale != 1.0] == [0, 3, 6, 9]
    assert {t.noise_scale for t in r.head} == {1.0, 4.0}
    assert r.splits == ((0, 2), (3, 2), (6, 2), (9, 2)) and r.tree(16).nodes(19) == 16
    assert r.trainable == tuple(range(20))  # every edge, the last step's too (its noise never reaches x0_hat)
    assert r.source == "shared_noise" and r.decode == "x0_hat" and not r.tails
    (r,) = BranchGRPOPlan(BranchGRPOMethod(train_last=False)).for_iteration(0).rollouts
    assert r.trainable == tuple(range(19))
    with pytest.raises(ValueError, match="leaves"):
        BranchGRPOMethod(group_size=12)
    with pytest.raises(ValueError, match="split_points"):
        BranchGRPOMethod(split_points=[0, 3, 6, 20])


def released_pruned_depths(current_step, base, slide, interval, stop, split_points):
    """The release's depth-pruning window (:1272-1300), re-derived."""
    base = sorted(base)
    if not slide:
        return set(base)
    stop = max(split_points) if stop is None else stop
    shift = min(max(0, current_step // max(1, interval)), max(0, base[0] - stop))
    return {d - shift for d in base}


@pytest.mark.parametrize("slide,interval,stop", [(False, 1, None), (True, 30, 9), (True, 7, None), (True, 1, 14)])
def test_depth_pruning_window(slide, interval, stop):
    cfg = BranchGRPOMethod(depth_pruning=[15, 16, 17, 18], depth_pruning_slide=slide,
                           depth_pruning_slide_interval=interval, depth_pruning_stop_depth=stop)
    plan = BranchGRPOPlan(cfg)
    for it in range(300):
        pruned = released_pruned_depths(it + 1, cfg.depth_pruning, slide, interval, stop, cfg.split_points)
        assert plan.pruned_depths(it) == pruned
        (r,) = plan.for_iteration(it).rollouts
        assert r.trainable == tuple(k for k in range(20) if k + 1 not in pruned)  # edge k reaches depth k + 1
    limited = BranchGRPOPlan(cfg.model_copy(update={"pruning_iterations": 150}))
    assert limited.pruned_depths(149) and not limited.pruned_depths(150)  # current_step <= int(300 x 0.5)


def tree_group(cfg=BranchGRPOMethod(), seed=0):
    """One tree sampled on a stand-in, its leaves rewarded at random, advantages set."""
    bb = StandInBackbone(4, 2, velocity=lambda x, s: 0.5 * x - s)
    ip = BranchGRPOPlan(cfg).for_iteration(0)
    (g,) = sample_iteration(bb, ip, [Prompt(0, 0, "", stand_in_embeds())], ("b", 0), cfg.group_size, 16, 16).groups
    g.rewards = {"final": {"r": torch.rand(cfg.group_size, generator=torch.Generator().manual_seed(seed))}}
    g.advantages = group_advantages_of(g, {"r": 1.0}, "normalise_each", 5.0)
    return bb, g


def test_sampled_tree_and_per_depth_advantages():
    bb, g = tree_group()
    assert bb.passes == 203 and g.advantages.shape == (16, 20)
    torch.testing.assert_close(g.advantages, tree_advantages(g.rewards["final"]["r"], g.rollout.tree(16), 20).clamp(-5, 5))
    # an edge takes its child's advantage: between splits a chain keeps one advantage
    assert torch.all(g.advantages[:, 10:] == g.advantages[:, 10:11]) and torch.all(g.advantages[:, 1] == g.advantages[:, 0])


def release_edges(g):
    """collect_all_transitions, re-derived on the sampled tree: (parent step, child node) edges in
    depth-first order (for each child: the edge, then its subtree), each with its child's advantage."""
    tree, out = g.rollout.tree(16), []

    def visit(k, node):
        if k == 20:
            return
        b = tree.nodes(k) // tree.nodes(k - 1)
        for child in range(node * b, node * b + b):
            out.append((k, child, float(g.advantages[child * (16 // tree.nodes(k)), k])))
            visit(k + 1, child)
    visit(0, 0)
    return out


def released_width_pruning(edges, mode, ratio=0.5, last_split=9):
    late = [e for e in edges if e[0] > last_split]
    other = [e for e in edges if e[0] <= last_split]
    if mode == 1:  # per last-split branch (here: one chain per leaf), the best by advantage, stable
        kept = []
        for c in dict.fromkeys(e[1] for e in late):
            group = sorted([e for e in late if e[1] == c], key=lambda e: e[2], reverse=True)
            kept += group[:max(1, int(len(group) * ratio))]
    else:  # the best and the worst of all late edges
        ranked = sorted(late, key=lambda e: e[2], reverse=True)
        keep = max(2, int(len(ranked) * ratio))
        kept = ranked[:keep // 2] + ranked[-(keep - keep // 2):]
    return {(k, c) for k, c, _ in other + kept}


def test_every_edge_once_in_depth_first_order():
    _, g = tree_group()
    edges = release_edges(g)
    assert len(edges) == 2 * 3 + 4 * 3 + 8 * 3 + 16 * 11 == 218  # edges per tree at T = 20
    assert trained_edges(g) == sorted(((k, c) for k, c, _ in edges), key=lambda e: (e[1] * (16 // g.rollout.tree(16).nodes(e[0])), e[0]))
    assert [e[:2] for e in edges] == trained_edges(g)  # the harness's order is the release's DFS


@pytest.mark.parametrize("mode", [1, 2])
def test_width_pruning_is_the_releases(mode):
    for seed in range(3):
        _, g = tree_group(BranchGRPOMethod(width_pruning=mode), seed)
        kept = set(trained_edges(g))
        assert kept == released_width_pruning(release_edges(g), mode)
        if mode == 1:  # ties within a chain keep depth-first order: the same as pruning depths 16-20
            assert kept == {(k, c) for k, c, _ in release_edges(g) if k < 15} and len(kept) == 218 - 80
        else:
            assert len(kept) == 58 + 80 and len({c for k, c in kept if k > 9}) == 8  # whole chains of 4 + 4 leaves


def test_an_adamw_step_every_six_shuffled_edges():
    cfg = BranchGRPOMethod()
    _, g = tree_group(cfg)
    units = train_units(g, ("b", 0), 12, cfg)
    assert sum(len(u.prev) for u in units) == 218 and max(u.update for u in units) + 1 == math.ceil(218 / 6) == 37
    per_update = [sum(len(u.prev) for u in units if u.update == k) for k in range(37)]
    assert per_update == [6] * 36 + [2]
    assert all(u.weight == 1 / 218 for u in units)  # per_tree_loss: the release's loss / (12 x 218)
    again = train_units(g, ("b", 0), 12, cfg)
    assert [(u.update, u.i, u.index.tolist()) for u in units] == [(u.update, u.i, u.index.tolist()) for u in again]
    other = train_units(g, ("b", 1), 12, cfg)  # another iteration: another shuffle
    assert [(u.update, u.i) for u in units] != [(u.update, u.i) for u in other]
    for u in units:  # siblings in one step share their parent's forward; each edge its child's advantage
        assert len(u.x) == len(set(u.index.tolist())) <= len(u.prev)
    whole = train_units(g, ("b", 0), 12, cfg.model_copy(update={"update": "iteration", "per_tree_loss": False}))
    assert {u.update for u in whole} == {0} and sum(len(u.x) for u in whole) == 203  # one forward per parent
