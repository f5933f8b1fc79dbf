"""Rollout plans: what each method samples, trains and normalises, as data for the one trainer.

A plan answers, per iteration: is there a deterministic anchor trajectory; which groups of G
trajectories (Rollouts) a prompt gets, where each starts (fresh noise, one noise shared by the
group, or the anchor's latent at some step), which transitions are SDE/ODE, which deterministic
tails finish them, and which transitions are trained. Advantages are normalised within a Rollout.
E-GRPO's plan lives here; DanceGRPO's and MixGRPO's in `baselines/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

import torch

from .merge import merge_lengths
from .sampler import SDE, Transition, make_transitions
from .schedule import shifted_sigmas

Source = Literal["noise", "shared_noise", "anchor"]


@dataclass(frozen=True)
class Rollout:
    """G trajectories of one prompt that form one advantage group.

    head: the transitions sampled row by row from step `start` (stochastic ones trained);
    tails: deterministic continuations of the head's end, each decoded and rewarded (E-GRPO's ODE
    granularities); no tails means the head reaches sigma = 0 itself.
    trainable: indices into head of the transitions that may be trained; train_per_row: train a
    random subset of that size per row (DanceGRPO), else all of them.
    """

    key: str
    start: int
    source: Source
    head: tuple[Transition, ...]
    trainable: tuple[int, ...]
    tails: tuple[tuple[Transition, ...], ...] = ()
    train_per_row: int | None = None
    sigmas: torch.Tensor | None = None  # override of the iteration's sigmas (MixGRPO-Flash re-grid)


@dataclass(frozen=True)
class IterationPlan:
    """Everything sampled for one prompt in one iteration."""

    sigmas: torch.Tensor
    rollouts: tuple[Rollout, ...]
    anchor: tuple[Transition, ...] | None = None


class RolloutPlan(Protocol):
    """A method, as the trainer sees it."""

    name: str
    group_size: int

    def for_iteration(self, iteration: int) -> IterationPlan: ...


ACTIVE_PRESETS = ("first4", "first8", "second8", "all")


def active_steps(spec: str | Sequence[int], num_steps: int) -> tuple[int, ...]:
    """Table 3's trained-step sets: first 4, first 8, second 8 (steps 8..15), all; or explicit steps."""
    if not isinstance(spec, str):
        steps = tuple(int(s) for s in spec)
    elif spec == "all":
        steps = tuple(range(num_steps))
    elif spec.startswith("first"):
        steps = tuple(range(int(spec[5:])))
    elif spec.startswith("second"):
        n = int(spec[6:])
        steps = tuple(range(n, 2 * n))
    else:
        raise ValueError(f"active steps must be one of {ACTIVE_PRESETS} or a list, got {spec!r}")
    if not steps or min(steps) < 0 or max(steps) >= num_steps:
        raise ValueError(f"active steps {steps} outside 0..{num_steps - 1}")
    return steps


@dataclass(frozen=True)
class EGRPOPlan:
    """E-GRPO (arXiv 2601.00423): entropy-merged SDE branches off a deterministic anchor.

    For each active step n, G branches take ONE merged SDE step n -> n+l_n from the anchor latent at
    n, then ODE to the end from n+l_n (the authors' release resumes at n+1: a defect not copied),
    once per granularity (ODE stride 1, 2, ...). Advantages are normalised within the G branches of
    the same step; one trained transition per branch.
    """

    num_steps: int = 16
    shift: float = 3.0
    group_size: int = 12
    eta: float = 0.7
    active: str | tuple[int, ...] = "first8"
    tau: float = 2.2
    reading: str = "entropy_power"
    fixed_merge: int | None = None
    granularities: tuple[int, ...] = (1, 2)
    name: str = "egrpo"

    @property
    def sigmas(self) -> torch.Tensor:
        return shifted_sigmas(self.num_steps, self.shift)

    def merge_lengths(self) -> list[int]:
        steps = active_steps(self.active, self.num_steps)
        return merge_lengths(self.sigmas, steps, tau=self.tau, eta=self.eta, reading=self.reading,
                             fixed=self.fixed_merge)

    def for_iteration(self, iteration: int) -> IterationPlan:
        sigmas = self.sigmas
        rollouts = []
        for n, length in zip(active_steps(self.active, self.num_steps), self.merge_lengths()):
            head = make_transitions(self.num_steps, {n: SDE("flow_grpo", self.eta, length)}, start=n)[:1]
            tails = tuple(make_transitions(self.num_steps, start=n + length, ode_stride=g) for g in self.granularities)
            rollouts.append(Rollout(f"step{n}", n, "anchor", head, trainable=(0,), tails=tails))
        return IterationPlan(sigmas, tuple(rollouts), anchor=make_transitions(self.num_steps))
