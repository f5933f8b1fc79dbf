"""A schedule as data, without torch: `Transition`s covering 0..T (ODE, SDE, merged SDE), how they are
made from per-step SDE choices, and the tree a group's rows may form. The method registry, the rollout
plans and the Snakefile import these at parse time, where torch need not be installed; the sampler
(egrpo.sampler) walks them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    import torch

    from .sde import Rule

DPM2 = "dpm_solver_2m"  # deterministic multistep rule (MixGRPO-Flash's ODE tail)


@dataclass(frozen=True)
class Transition:
    """sigmas[i] -> sigmas[j] under `rule` with noise level `eta` (j > i + 1: a merged step).

    rule is an `sde_step` rule, or DPM2 for a deterministic DPM-Solver++(2M) step. noise_scale
    widens the noise actually drawn (BranchGRPO's split steps) while the log-prob stays that of the
    policy's own std, as in that release.
    """

    i: int
    j: int
    rule: str = "ode"
    eta: float = 0.0
    noise_scale: float = 1.0

    @property
    def stochastic(self) -> bool:
        return self.rule not in ("ode", DPM2) and self.eta > 0


@dataclass(frozen=True)
class SDE:
    """How a stochastic step is taken: rule, noise level, merge length."""

    rule: Rule = "flow_grpo"
    eta: float = 0.7
    length: int = 1


def make_transitions(num_steps: int, sde: Mapping[int, SDE] | None = None, *, start: int = 0,
                     ode_stride: int = 1) -> tuple[Transition, ...]:
    """Transitions from step `start` to T: SDE (possibly merged) where `sde` says, ODE elsewhere.

    ODE transitions take `ode_stride` steps at a time (stride 2 is E-GRPO's coarse "granularity"),
    never past T; a merged SDE step at i jumps to i + length.
    """
    sde = dict(sde or {})
    out, i = [], start
    while i < num_steps:
        if i in sde:
            s = sde[i]
            j = min(i + s.length, num_steps)
            out.append(Transition(i, j, s.rule, s.eta))
        else:
            j = min(i + ode_stride, num_steps)
            nxt = [k for k in sde if i < k < j]  # never stride over a requested SDE step
            j = min(nxt) if nxt else j
            out.append(Transition(i, j))
        i = j
    return tuple(out)


@dataclass(frozen=True)
class Tree:
    """The rows of a lane as the leaves of one tree: the lane's transition k splits every node into
    b children for each (k, b) in `splits` (one child elsewhere), children kept in order, so after
    transition k row r sits at node r // (rows / nodes(k)). Rows at one node hold one latent: the
    sampler forwards each node once, and draws a node's noise from its own generator (named by
    transition and node), so no draw depends on batching or on the other rows."""

    rows: int
    splits: tuple[tuple[int, int], ...]

    def __post_init__(self):
        at = [k for k, _ in self.splits]
        if len(set(at)) != len(at) or any(k < 0 for k in at) or any(b < 2 for _, b in self.splits):
            raise ValueError(f"tree splits must be distinct transitions >= 0 with >= 2 children each, got {self.splits}")
        if math.prod(b for _, b in self.splits) != self.rows:
            raise ValueError(f"a tree with splits {self.splits} has {math.prod(b for _, b in self.splits)} leaves, "
                             f"not the group's {self.rows} rows")

    def nodes(self, k: int) -> int:
        """Distinct nodes after transition k (k = -1: the root)."""
        return math.prod(b for at, b in self.splits if at <= k)

    def node_of(self, k: int) -> torch.Tensor:
        """[rows] the node index of each row after transition k."""
        import torch

        return torch.arange(self.rows) // (self.rows // self.nodes(k))

    def first_rows(self, k: int) -> torch.Tensor:
        """[nodes(k)] one row of each node after transition k (the first of its leaves)."""
        import torch

        return torch.arange(self.nodes(k)) * (self.rows // self.nodes(k))
