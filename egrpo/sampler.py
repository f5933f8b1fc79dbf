"""Run a schedule whose steps are each ODE or (merged) SDE, batched, from seeded noise.

A schedule of transitions is data (`Transition` tuples covering 0..T); the sampler walks it, asks the
backbone for one velocity per transition, and records latents, log-probs and which transitions were
stochastic, which is all the GRPO update needs to re-score them later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from .dpm_solver import dpm_solver_2m_step
from .flux import FluxBackbone, PromptEmbeds
from .sde import Rule, sde_step
from .seeding import randn_rows

DPM2 = "dpm_solver_2m"  # deterministic multistep rule (MixGRPO-Flash's ODE tail)


@dataclass(frozen=True)
class Transition:
    """sigmas[i] -> sigmas[j] under `rule` with noise level `eta` (j > i + 1: a merged step).

    rule is an `sde_step` rule, or DPM2 for a deterministic DPM-Solver++(2M) step.
    """

    i: int
    j: int
    rule: str = "ode"
    eta: float = 0.0

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


@dataclass
class Trajectory:
    """What a sampled batch leaves behind: latents[k] is x at sigmas[transitions[k].i];
    latents[-1] is the final x at sigma = 0 (with keep_latents=False only the first and last are
    kept). log_probs is [B, K], one column per transition."""

    transitions: tuple[Transition, ...]
    latents: list[torch.Tensor]
    log_probs: torch.Tensor
    images: torch.Tensor | None = None

    @property
    def stochastic(self) -> list[bool]:
        return [t.stochastic for t in self.transitions]

    def final(self) -> torch.Tensor:
        return self.latents[-1]


@torch.no_grad()
def sample(
    backbone: FluxBackbone,
    embeds: PromptEmbeds,
    sigmas: torch.Tensor,
    transitions: Sequence[Transition],
    x: torch.Tensor,
    generators: Sequence[torch.Generator] | None,
    *,
    height: int,
    width: int,
    decode: bool = True,
    keep_latents: bool = True,
) -> Trajectory:
    """Walk `transitions` from packed latents x (at sigmas[transitions[0].i]).

    Noise for each stochastic transition is drawn per row from `generators` (one per row, in order),
    so a row's trajectory does not depend on the batch it is sampled in.
    """
    if transitions and any(a.j != b.i for a, b in zip(transitions, transitions[1:])):
        raise ValueError("transitions must be contiguous")
    x = x.float()
    latents, log_probs = [x], []
    history = None  # (sigma, x0_hat) of the previous DPM-Solver step
    for tr in transitions:
        v = backbone.velocity(x, sigmas[tr.i], embeds, height, width)
        if tr.rule == DPM2:
            s, s_next = float(sigmas[tr.i]), float(sigmas[tr.j])
            x0 = x - s * v
            x = dpm_solver_2m_step(x, x0, history and history[1], history and history[0], s, s_next)
            history = (s, x0)
            log_probs.append(torch.zeros(x.shape[0], device=x.device))
        else:
            history = None
            noise = None
            if tr.stochastic:
                if generators is None or len(generators) != x.shape[0]:
                    raise ValueError("a stochastic transition needs one generator per batch row")
                noise = randn_rows(tuple(x.shape[1:]), list(generators), device=x.device)
            step = sde_step(x, v, sigmas, tr.i, tr.j, rule=tr.rule, eta=tr.eta, noise=noise)
            x = step.prev_sample
            log_probs.append(step.log_prob)
        if keep_latents:
            latents.append(x)
    if not keep_latents:
        latents.append(x)
    lp = torch.stack(log_probs, dim=1) if log_probs else torch.zeros(x.shape[0], 0)
    images = backbone.decode(x, height, width) if decode else None
    return Trajectory(tuple(transitions), latents, lp, images)


def initial_noise(backbone: FluxBackbone, generators: Sequence[torch.Generator], height: int, width: int) -> torch.Tensor:
    """x at sigma = 1: one packed standard-normal row per generator."""
    return randn_rows(backbone.packed_shape(height, width), list(generators), device=backbone.device)
