"""BranchGRPO (arXiv 2509.06040) as a rollout plan: a binary tree of DanceGRPO
trajectories per prompt, trained edge by edge.

One root per prompt; every step is DanceGRPO's SDE (eta 0.3); at the split steps (0, 3, 6, 9 of 20)
every node gets two children from one forward, their noise drawn 4x wider while the log-prob keeps
the policy's own std (the release's split noise scale); the 16 leaves' images are the data
prediction at the last step. A node's reward is the mean of its leaves'; the nodes at each depth
are normalised together, and every edge (all 218, the last step's included) is trained with its
child's advantage, its loss divided by the tree's trained edges. The edges are shuffled and AdamW
steps every 6 edges of each tree (the release: every 12 edges of the 2 trees on a GPU), about 37
steps an iteration. Depth and width pruning are off, as in the release's script
(Fredreic1849/BranchGRPO fastvideo/train_branchgrpo_flux.py; docs/reference.md, "BranchGRPO").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from egrpo.methods import MethodConfig, MethodSpec, register
from egrpo.plans import EdgeTraining, IterationPlan, NodeReward, Rollout
from egrpo.schedule import shifted_sigmas
from egrpo.transitions import Transition


class BranchGRPOMethod(MethodConfig):
    name: Literal["branchgrpo"] = "branchgrpo"
    num_steps: int = Field(20, ge=2, description="the release's T = 20")
    group_size: int = Field(16, ge=2, description="leaves of a tree: branching ** len(split_points)")
    eta: float = Field(0.3, gt=0, description="DanceGRPO noise level")
    split_points: list[int] = Field(default_factory=lambda: [0, 3, 6, 9], min_length=1)
    branching: int = Field(2, ge=2, description="children of a node at a split step")
    split_noise_scale: float = Field(4.0, gt=0, description="noise drawn this much wider at split steps; the "
                                     "log-prob keeps the unscaled std")
    update: Literal["iteration", "rollout", "edges"] = Field(
        "edges", description="edges: an AdamW step every `edges_per_update` shuffled edges of each tree")
    edges_per_update: int = Field(6, ge=1, description="edges of each tree per AdamW step (the release: 12 per GPU "
                                  "over its 2 trees)")
    per_tree_loss: bool = Field(True, description="each edge's loss divided by the tree's trained edges, as the "
                                "release; false: a step's loss is the mean over its edges, as every other method")
    train_last: bool = Field(True, description="train the last step's edges, whose noise the scored x0_hat never "
                             "sees (the release does)")
    node_reward: NodeReward = Field("mean", description="mean of the leaves, or prob_weighted (the release's "
                                    "--tree_prob_weighted: a softmax over the children's log-probs)")
    depth_pruning: list[int] = Field(default_factory=list, description="child depths (transition k + 1) not trained")
    depth_pruning_slide: bool = False
    depth_pruning_slide_interval: int = Field(1, ge=1, description="iterations per slide of the pruned depths")
    depth_pruning_stop_depth: int | None = Field(None, ge=0, description="the shallowest pruned depth stops here "
                                                 "(default: the last split point)")
    width_pruning: Literal[0, 1, 2] = Field(0, description="edges after the last split: 0 all; 1 the best "
                                            "width_pruning_ratio of each branch; 2 the best and worst of the tree")
    width_pruning_ratio: float = Field(0.5, gt=0, le=1)
    pruning_iterations: int | None = Field(None, ge=0, description="prune in the first N iterations only "
                                           "(the release's pruning_step_ratio x iterations); None: always")

    @model_validator(mode="after")
    def _tree(self):
        points = self.split_points
        if len(set(points)) != len(points) or min(points) < 0 or max(points) > self.num_steps - 1:
            raise ValueError(f"split_points {points} must be distinct steps in 0..{self.num_steps - 1}")
        if self.branching ** len(points) != self.group_size:
            raise ValueError(f"group_size {self.group_size} must be the tree's leaves: branching {self.branching} "
                             f"** {len(points)} splits = {self.branching ** len(points)}")
        return self


@dataclass(frozen=True)
class BranchGRPOPlan:
    cfg: BranchGRPOMethod

    def pruned_depths(self, iteration: int) -> set[int]:
        """Child depths (transition k + 1) whose edges are not trained at this iteration: the
        release's depth pruning window, slid one depth shallower every interval (its step counter is
        the iteration + 1), never above the stop depth."""
        c = self.cfg
        if not c.depth_pruning or not self.pruning(iteration):
            return set()
        base = sorted(c.depth_pruning)
        if not c.depth_pruning_slide:
            return set(base)
        stop = max(c.split_points) if c.depth_pruning_stop_depth is None else c.depth_pruning_stop_depth
        shift = min((iteration + 1) // c.depth_pruning_slide_interval, max(0, base[0] - stop))
        return {d - shift for d in base}

    def pruning(self, iteration: int) -> bool:
        c = self.cfg
        return c.pruning_iterations is None or iteration < c.pruning_iterations

    def for_iteration(self, iteration: int) -> IterationPlan:
        c = self.cfg
        splits = set(c.split_points)
        head = tuple(Transition(i, i + 1, "dance_grpo", c.eta, c.split_noise_scale if i in splits else 1.0)
                     for i in range(c.num_steps))
        pruned = self.pruned_depths(iteration)
        last = c.num_steps if c.train_last else c.num_steps - 1
        trainable = tuple(k for k in range(last) if k + 1 not in pruned)
        edges = EdgeTraining(c.node_reward, c.width_pruning if self.pruning(iteration) else 0, c.width_pruning_ratio,
                             c.edges_per_update, c.per_tree_loss)
        tree = Rollout("tree", 0, "shared_noise", head, trainable, decode="x0_hat",
                       splits=tuple((s, c.branching) for s in sorted(splits)), edges=edges)
        return IterationPlan(shifted_sigmas(c.num_steps, c.shift), (tree,))


register(MethodSpec("branchgrpo", BranchGRPOMethod, BranchGRPOPlan, "BranchGRPO"))
