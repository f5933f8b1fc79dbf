import pytest
import torch

from egrpo.dpm_solver import dpm_solver_2m_step
from egrpo.objectives import clipped_ratio_loss, combine_advantages, group_advantages, rollout_advantages


def test_group_advantages_normalise():
    r = torch.tensor([1.0, 2.0, 3.0, 4.0])
    a = group_advantages(r)
    torch.testing.assert_close(a, (r - 2.5) / (r.std() + 1e-8))
    assert torch.all(group_advantages(torch.ones(4)) == 0)  # equal rewards -> no signal, no NaN


def _reference_advantages(per_tail: dict, weights: dict, clip: float = 5.0) -> torch.Tensor:
    """The releases' order, re-derived: normalise each (tail, reward) within the group, weight, sum over
    rewards and over granularities, then clamp the sum once (G2RPO train_one_step, VisualGRPO's loss,
    MixGRPO's merged advantage)."""
    total = torch.zeros_like(next(iter(next(iter(per_tail.values())).values())))
    for rewards in per_tail.values():
        for name, r in rewards.items():
            total = total + weights[name] * (r - r.mean()) / (r.std() + 1e-8)
    return total.clamp(-clip, clip)


def test_the_summed_advantage_is_clamped_not_each_term():
    outlier = torch.tensor([0.0] * 11 + [1.0])  # one outlier in a group of 12: each term is 3.18
    two_tails = {"stride1": {"hps": outlier}, "stride2": {"hps": outlier}}
    a = rollout_advantages(two_tails, {"hps": 1.0}, "normalise_each")
    assert a.max() == 5.0 and float(group_advantages(outlier).max()) * 2 > 6.3  # clamping each term gave 6.35
    torch.testing.assert_close(a, _reference_advantages(two_tails, {"hps": 1.0}))
    hps_clip = {"stride1": {"hps": outlier, "clip": outlier}, "stride2": {"hps": outlier, "clip": outlier}}
    b = rollout_advantages(hps_clip, {"hps": 1.0, "clip": 1.0}, "normalise_each")
    assert b.max() == 5.0  # per-term clamping reached 12.7
    torch.testing.assert_close(b, _reference_advantages(hps_clip, {"hps": 1.0, "clip": 1.0}))
    small = {"final": {"hps": torch.tensor([0.1, 0.3, 0.2, 0.4])}}
    torch.testing.assert_close(rollout_advantages(small, {"hps": 1.0}, "normalise_each"),
                               group_advantages(small["final"]["hps"]))


def test_two_aggregation_modes_differ_and_match_definitions():
    hps = torch.tensor([0.30, 0.31, 0.32, 0.29])
    clip = torch.tensor([0.20, 0.40, 0.10, 0.30])
    w = {"hps": 0.7, "clip": 0.3}
    each = combine_advantages({"hps": hps, "clip": clip}, w, "normalise_each")
    torch.testing.assert_close(each, 0.7 * group_advantages(hps) + 0.3 * group_advantages(clip))
    weighted = combine_advantages({"hps": hps, "clip": clip}, w, "weight_then_normalise")
    torch.testing.assert_close(weighted, group_advantages(0.7 * hps + 0.3 * clip))
    assert not torch.allclose(each, weighted)


def test_ppo_clip_loss():
    old = torch.zeros(4)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    new = torch.log(torch.tensor([1.5, 0.5, 1.5, 0.5]))
    loss, ratio, clipped = clipped_ratio_loss(new, old, adv, 0.2)
    # positive advantage: ratio capped at 1.2 from above; negative: at 0.8 from below (pessimistic)
    torch.testing.assert_close(loss, torch.tensor([-1.2, -0.5, 1.5, 0.8]))
    assert clipped.tolist() == [True, True, True, True]
    loss1, ratio1, clipped1 = clipped_ratio_loss(old, old, adv, 1e-4)
    assert torch.all(ratio1 == 1) and not clipped1.any()


def test_dpm_solver_exact_on_constant_x0():
    # If the model's data prediction is exact and constant, DPM-Solver++ lands on the flow path.
    x0, eps = torch.randn(3), torch.randn(3)
    sig = [0.8, 0.6, 0.3, 0.0]
    x = (1 - sig[0]) * x0 + sig[0] * eps
    prev = None
    for k in range(3):
        x = dpm_solver_2m_step(x, x0, x0 if prev else None, prev, sig[k], sig[k + 1])
        prev = sig[k]
        torch.testing.assert_close(x, (1 - sig[k + 1]) * x0 + sig[k + 1] * eps)


# ---- TempFlow-GRPO's population std; BranchGRPO's per-depth tree advantages -------------------------
from egrpo.objectives import tree_advantages  # noqa: E402
from egrpo.transitions import Tree  # noqa: E402


def test_population_std_is_flow_grpos_stat_tracker():
    """flow_grpo's PerPromptStatTracker: (r - mean) / (np.std(r) + 1e-4), numpy's population std."""
    import numpy as np

    r = torch.tensor([0.31, 0.27, 0.35, 0.30, 0.29, 0.33], dtype=torch.float64)
    expected = (r.numpy() - r.numpy().mean()) / (np.std(r.numpy()) + 1e-4)
    torch.testing.assert_close(group_advantages(r, std="population", eps=1e-4), torch.from_numpy(expected))
    ratio = group_advantages(r) / group_advantages(r, std="population", eps=1e-8)
    torch.testing.assert_close(ratio, torch.full_like(r, (5 / 6) ** 0.5))  # unbiased std is sqrt(6/5) larger


class _Node:
    """The release's tree (train_branchgrpo_flux.py TreeNode), rebuilt to re-derive its advantages."""

    def __init__(self, depth, parent=None):
        self.depth, self.children, self.reward, self.log_prob = depth, [], None, None
        if parent:
            parent.children.append(self)

    def leaves(self):
        return [self] if not self.children else [leaf for c in self.children for leaf in c.leaves()]


def _release_advantages(rewards, splits, steps, log_probs=None):
    """compute_node_rewards_from_leaves + compute_hierarchical_advantages_by_depth, re-derived: grow
    the tree step by step (children in order), leaf rewards in leaf order, every internal node the mean
    of its leaves (or the softmax of its children's edge log-probs), then each depth's nodes normalised
    together (unbiased std + 1e-8; zeros below std 1e-6 or for a single node). Returns, per leaf row
    and step, the advantage of the node that row reaches after that step."""
    root, level, path = _Node(0), None, []
    level = [root]
    for k in range(steps):
        b = dict(splits).get(k, 1)
        level = [_Node(k + 1, n) for n in level for _ in range(b)]
        path.append(level)
    for leaf, r in zip(level, rewards.tolist()):
        leaf.reward = r
    if log_probs is not None:
        for k, nodes in enumerate(path):
            for n in nodes:
                n.log_prob = float(log_probs[level.index(n.leaves()[0]), k])
    for k in reversed(range(steps - 1)):
        for n in path[k]:
            if log_probs is None:
                n.reward = sum(leaf.reward for leaf in n.leaves()) / len(n.leaves())
            elif len(n.children) == 1:
                n.reward = n.children[0].reward
            else:
                w = torch.softmax(torch.tensor([c.log_prob for c in n.children]), 0)
                n.reward = float(sum(wi * c.reward for wi, c in zip(w, n.children)))
    out = torch.zeros(len(rewards), steps, dtype=torch.float64)
    for k, nodes in enumerate(path):
        r = torch.tensor([n.reward for n in nodes], dtype=torch.float64)
        adv = torch.zeros_like(r) if len(r) < 2 or r.std() < 1e-6 else (r - r.mean()) / (r.std() + 1e-8)
        for row, leaf in enumerate(level):
            node = next(n for n in nodes if leaf in n.leaves())
            out[row, k] = adv[nodes.index(node)]
    return out


def test_tree_advantages_per_depth_match_the_release():
    splits, steps = ((0, 2), (2, 2), (3, 2)), 5
    rewards = torch.tensor([0.30, 0.41, 0.28, 0.35, 0.33, 0.26, 0.39, 0.31], dtype=torch.float64)
    a = tree_advantages(rewards, Tree(8, splits), steps)
    torch.testing.assert_close(a, _release_advantages(rewards, splits, steps))
    # depth 1 has two nodes: its advantages are +-1/sqrt(2) whatever the rewards (sign only)
    torch.testing.assert_close(a[:, 0].abs(), torch.full((8,), 2 ** -0.5, dtype=torch.float64), rtol=1e-5, atol=0)
    torch.testing.assert_close(a[:, 1], a[:, 0])  # no split at step 1: the same nodes
    torch.testing.assert_close(a[:, 4], group_advantages(rewards))  # the leaves: plain GRPO


def test_tree_advantages_probability_weighted_match_the_release():
    splits, steps = ((0, 2), (2, 2)), 3
    rewards = torch.tensor([1.0, 5.0, 3.0, 3.2], dtype=torch.float64)
    log_probs = torch.tensor([[0.1, 0.0, -1.0], [0.1, 0.0, 1.0], [-0.3, 0.0, 0.0], [-0.3, 0.0, 0.0]])
    a = tree_advantages(rewards, Tree(4, splits), steps, node_reward="prob_weighted", log_probs=log_probs)
    torch.testing.assert_close(a, _release_advantages(rewards, splits, steps, log_probs))
    # the first node averages 3 < 3.1 but weighs its likelier child (5) up to 4.5 > 3.1: the sign flips
    assert a[0, 0] > 0 > tree_advantages(rewards, Tree(4, splits), steps)[0, 0]


def test_tree_advantages_without_spread_are_zero():
    a = tree_advantages(torch.tensor([1.0, 3.0, 3.0, 1.0]), Tree(4, ((0, 2), (1, 2))), 2)
    assert torch.all(a[:, 0] == 0) and torch.all(a[:, 1] != 0)  # both depth-1 nodes average 2
    assert torch.all(tree_advantages(torch.ones(4), Tree(4, ((0, 4),)), 1) == 0)
    # one node before the first split: nothing to compare, zero
    b = tree_advantages(torch.tensor([1.0, 2.0]), Tree(2, ((1, 2),)), 2)
    assert torch.all(b[:, 0] == 0) and torch.all(b[:, 1] != 0)


def test_a_trees_rewards_combine_and_clamp_like_a_groups():
    tree = Tree(4, ((0, 2), (1, 2)))
    hps, clip = torch.tensor([0.1, 0.4, 0.2, 0.3]), torch.tensor([0.5, 0.2, 0.1, 0.6])

    def per_depth(r):
        return tree_advantages(r, tree, 2)
    a = rollout_advantages({"final": {"hps": hps, "clip": clip}}, {"hps": 1.0, "clip": 0.5}, "normalise_each",
                           clip=1.0, normalise=per_depth)
    torch.testing.assert_close(a, (per_depth(hps) + 0.5 * per_depth(clip)).clamp(-1, 1))
    b = rollout_advantages({"final": {"hps": hps, "clip": clip}}, {"hps": 1.0, "clip": 0.5}, "weight_then_normalise",
                           normalise=per_depth)
    torch.testing.assert_close(b, per_depth(hps + 0.5 * clip))
