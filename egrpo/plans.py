"""Rollout plans: what each method samples, trains and normalises, as data for the one trainer.

A plan answers, per iteration: is there a deterministic anchor trajectory; which groups of G
trajectories (Rollouts) a prompt gets, where each starts (fresh noise, one noise shared by the
group, or the anchor's latent at some step), which transitions are SDE/ODE, whether the rows form
a tree (rows sharing a prefix share its forwards), which deterministic tails finish them, and which
transitions are trained and how. Advantages are normalised within a Rollout (per depth in a tree).
Plans are data: importing them (the method registry, the Snakefile) needs pydantic, not torch.
E-GRPO's config and plan live here; every other method's in `baselines/`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, Sequence, Union, get_args

from pydantic import Field, ValidationInfo, field_validator

from .merge import Reading, merge_lengths
from .methods import Axis, MethodConfig, MethodSpec, register
from .schedule import shifted_sigmas
from .transitions import Transition, Tree, make_transitions

if TYPE_CHECKING:  # plans are data; torch is needed only to build an iteration's sigmas
    import torch

Source = Literal["noise", "shared_noise", "anchor"]
Std = Literal["unbiased", "population"]  # the group normalisation's std (egrpo.objectives)
NodeReward = Literal["mean", "prob_weighted"]  # a tree node's reward from its leaves' (egrpo.objectives)


@dataclass(frozen=True)
class Tail:
    """A deterministic continuation of a rollout's head to sigma = 0, decoded and rewarded."""

    key: str
    transitions: tuple[Transition, ...]


@dataclass(frozen=True)
class EdgeTraining:
    """How a tree's edges are trained (BranchGRPO): each edge (transition k into one node) once,
    with the node's per-depth advantage; node rewards from the leaves' (`node_reward`); width
    pruning of the edges after the last split (0: off; 1: per last-split branch, the best
    `width_ratio` by advantage; 2: the best and worst `width_ratio` / 2 of the tree's); the edges
    shuffled and an AdamW step taken every `edges_per_update` (with update = edges); per_tree_loss
    divides each edge's loss by the tree's trained edges, as the release."""

    node_reward: NodeReward = "mean"
    width_pruning: Literal[0, 1, 2] = 0
    width_ratio: float = 0.5
    edges_per_update: int | None = None
    per_tree_loss: bool = False


@dataclass(frozen=True)
class Rollout:
    """G trajectories of one prompt that form one advantage group.

    head: the transitions sampled row by row from step `start` (stochastic ones trained);
    tails: deterministic continuations of the head's end, each decoded and rewarded (E-GRPO's ODE
    granularities), their advantages normalised per tail and summed; no tails means the head reaches
    sigma = 0 itself and its end is decoded: the last sample, or (decode = "x0_hat", DanceGRPO) the
    data prediction x - sigma v at the last transition's input, which drops that step's noise.
    trainable: indices into head of the transitions that may be trained; train_per_row: train a
    random subset of that size per row (DanceGRPO), else all of them.
    splits: (head index, children) pairs that make the G rows the leaves of one tree from the
    shared start (see transitions.Tree): a node is forwarded once and draws its own noise; a tree
    rooted at the anchor takes the anchor's velocity at its root (TempFlow-GRPO's branches).
    advantage_std, advantage_eps: the group normalisation's std and epsilon.
    noise_weight: c, each trained transition's loss weighted by c * its std (TempFlow-GRPO).
    edges: train the tree edge by edge with per-depth advantages (BranchGRPO), else row by row.
    """

    key: str
    start: int
    source: Source
    head: tuple[Transition, ...]
    trainable: tuple[int, ...]
    tails: tuple[Tail, ...] = ()
    train_per_row: int | None = None
    sigmas: torch.Tensor | None = None  # override of the iteration's sigmas (MixGRPO-Flash re-grid)
    decode: Literal["sample", "x0_hat"] = "sample"
    splits: tuple[tuple[int, int], ...] = ()
    advantage_std: Std = "unbiased"
    advantage_eps: float = 1e-8
    noise_weight: float | None = None
    edges: EdgeTraining | None = None

    def __post_init__(self):
        if (self.splits or self.edges) and self.source == "noise":
            raise ValueError(f"rollout {self.key}: a tree grows from one shared start (shared_noise or anchor)")
        if self.edges is not None and not self.splits:
            raise ValueError(f"rollout {self.key}: edge training needs a tree (splits)")

    def tree(self, group_size: int) -> Tree | None:
        return Tree(group_size, self.splits) if self.splits else None


@dataclass(frozen=True)
class IterationPlan:
    """Everything sampled for one prompt in one iteration."""

    sigmas: torch.Tensor
    rollouts: tuple[Rollout, ...]
    anchor: tuple[Transition, ...] | None = None


class RolloutPlan(Protocol):
    """A method, as the trainer sees it: built from its config (`cfg`). A plan class may set
    `logged_reward = "probe"` when its release logs the ODE sample's reward rather than the mean
    over its samples' (Fig. 4's left panel)."""

    cfg: MethodConfig

    def for_iteration(self, iteration: int) -> IterationPlan: ...


ActivePreset = Literal["first4", "first8", "second8", "all"]  # Table 3's trained-step sets
ACTIVE_PRESETS = get_args(ActivePreset)


def active_steps(spec: str | Sequence[int], num_steps: int) -> tuple[int, ...]:
    """Table 3's trained-step sets, or explicit steps. The last step (T - 1) lands on sigma = 0 and is
    never stochastic (neither release can train it), so `all` is 0..T-2 and `second8` 8..T-2."""
    last = num_steps - 2  # the last step a branch can start from
    if not isinstance(spec, str):
        steps = tuple(int(s) for s in spec)
    elif spec == "all":
        steps = tuple(range(last + 1))
    elif spec.startswith("first"):
        steps = tuple(range(int(spec[5:])))
    elif spec.startswith("second"):
        n = int(spec[6:])
        steps = tuple(range(n, min(2 * n, last + 1)))
    else:
        raise ValueError(f"active steps must be one of {ACTIVE_PRESETS} or a list, got {spec!r}")
    if not steps or min(steps) < 0 or max(steps) > last:
        raise ValueError(f"active steps {list(steps)} outside 0..{last} (T = {num_steps}: the last step "
                         "lands on sigma = 0 and is never stochastic)")
    return steps


def release_tail(num_steps: int, start: int, stride: int) -> tuple[Transition, ...]:
    """The E-GRPO/G2RPO releases' ODE tail of granularity `stride` from step `start`: the grid
    sigmas[:start+1] + sigmas[start+1::stride] walked up to its second-to-last point, whose data
    prediction is the image (a final jump to sigma = 0). So one stride-1 step first, then steps of
    `stride`; stride 1 is the plain ODE to the end."""
    points = [start, *range(start + 1, num_steps + 1, stride)][:-1]  # the evaluated points
    return tuple(Transition(a, b) for a, b in zip(points, [*points[1:], num_steps]))


class EGRPOMethod(MethodConfig):
    name: Literal["egrpo"] = "egrpo"
    update: Literal["iteration", "rollout", "samples"] = Field(
        "rollout", description="the releases step AdamW once per active step (8 per iteration); "
        "`iteration` is the paper's Alg. 1")
    active: Union[ActivePreset, list[int]] = "first8"
    tau: float = Field(2.2, ge=0)
    reading: Reading = "entropy_power"
    fixed_merge: int | None = Field(None, ge=1)
    granularities: list[int] = Field(default_factory=lambda: [1, 2], min_length=1)
    tail_grid: Literal["release", "uniform"] = Field(
        "release", description="stride-g ODE tails on the releases' grid (one stride-1 step, then stride g, "
        "final jump to sigma = 0) or strided from the branch's end")

    @field_validator("active")
    @classmethod
    def _active(cls, active, info: ValidationInfo):
        if "num_steps" in info.data:
            active_steps(active, info.data["num_steps"])
        return active

    @field_validator("granularities")
    @classmethod
    def _granularities(cls, g: list[int]) -> list[int]:
        if len(set(g)) != len(g) or min(g) < 1:
            raise ValueError(f"distinct ODE strides >= 1, got {g}")
        return g


@dataclass(frozen=True)
class EGRPOPlan:
    """E-GRPO (arXiv 2601.00423): entropy-merged SDE branches off a deterministic anchor.

    For each active step n, G branches take ONE merged SDE step n -> n+l_n from the anchor latent at
    n, then ODE to the end from n+l_n (the authors' release resumes at n+1: a defect not copied),
    once per granularity (ODE stride 1, 2, ...). A merge never lands on sigma = 0 (l_n <= T-1-n), so
    every branch ends with at least one ODE step. Advantages are normalised within the G branches of
    the same step; one trained transition per branch.
    """

    cfg: EGRPOMethod
    # the training reward the releases log (Fig. 4): the anchor's ODE image (C, G), not the branches'
    logged_reward: ClassVar[str] = "probe"

    @property
    def sigmas(self) -> torch.Tensor:
        return shifted_sigmas(self.cfg.num_steps, self.cfg.shift)

    def active_steps(self) -> tuple[int, ...]:
        return active_steps(self.cfg.active, self.cfg.num_steps)

    def merge_lengths(self) -> list[int]:
        c = self.cfg
        return merge_lengths(self.sigmas, self.active_steps(), tau=c.tau, eta=c.eta, reading=c.reading,
                             fixed=c.fixed_merge, last=c.num_steps - 1)

    def tail(self, start: int, stride: int) -> tuple[Transition, ...]:
        if self.cfg.tail_grid == "release":
            return release_tail(self.cfg.num_steps, start, stride)
        return make_transitions(self.cfg.num_steps, start=start, ode_stride=stride)

    def for_iteration(self, iteration: int) -> IterationPlan:
        c, rollouts = self.cfg, []
        for n, length in zip(self.active_steps(), self.merge_lengths()):
            head = (Transition(n, n + length, "flow_grpo", c.eta),)
            tails = tuple(Tail(f"stride{g}", self.tail(n + length, g)) for g in c.granularities)
            rollouts.append(Rollout(f"step{n}", n, "anchor", head, trainable=(0,), tails=tails))
        return IterationPlan(self.sigmas, tuple(rollouts), anchor=make_transitions(c.num_steps))


def active_label(active: str | Sequence[int]) -> str:
    """A set of trained steps as a table row names it: `first 8 steps`, `all steps`, `steps [0, 3]`."""
    if not isinstance(active, str):
        return f"steps {list(active)}"
    preset = re.fullmatch(r"(first|second)(\d+)", active)
    return f"{preset[1]} {preset[2]} steps" if preset else f"{active} steps"


def tau_label(tau: float) -> str:
    return "tau = 0 (no merging)" if tau == 0 else f"tau = {tau:.1f}" if round(tau, 1) == tau else f"tau = {tau:g}"


def merge_label(fixed_merge: int | None) -> str:
    return "adaptive" if fixed_merge is None else f"fixed {fixed_merge}-step merge"


# the paper's ablation tables of E-GRPO's fields (Tables 2-4), and Table 4 as a plot
EGRPO_AXES = (
    Axis("fixed_merge", "table2_merge", "Table 2: fixed vs adaptive merge length (E-GRPO)", merge_label),
    Axis("active", "table3_steps", "Table 3: which steps are trained (E-GRPO)", active_label),
    Axis("tau", "table4_tau", "Table 4: entropy threshold tau (E-GRPO)", tau_label, figure="tau_ablation",
         xlabel="entropy threshold tau"),
)
register(MethodSpec("egrpo", EGRPOMethod, EGRPOPlan, "E-GRPO", axes=EGRPO_AXES))
