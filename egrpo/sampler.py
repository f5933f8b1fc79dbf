"""Run a schedule whose steps are each ODE or (merged) SDE, batched, from seeded noise.

A schedule of transitions is data (`Transition` tuples covering 0..T: egrpo.transitions); the sampler
walks it, asks the backbone for one velocity per transition, and records latents, log-probs and which
transitions were stochastic, which is all the GRPO update needs to re-score them later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import torch

from .dpm_solver import dpm_solver_2m_step
from .flux import FluxBackbone, PromptEmbeds
from .sde import sde_step
from .seeding import randn_rows
from .transitions import DPM2, Transition, Tree

NodeGenerator = Callable[[int, int], torch.Generator]  # (transition, node) -> that node's generator


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


class Lane:
    """One batch of rows walking the same transitions (one prompt's group, an anchor, a tail).

    Lanes are advanced together by `run_lanes`; the finished lane holds its Trajectory.
    """

    def __init__(self, embeds: PromptEmbeds, sigmas: torch.Tensor, transitions: Sequence[Transition],
                 x: torch.Tensor, generators: Sequence[torch.Generator] | None = None, *, keep_latents: bool = True,
                 origin: Hashable | None = None, tree: Tree | None = None, node_generator: NodeGenerator | None = None,
                 record_velocity: bool = False):
        """generators: one per row, each row's noise drawn from its own in turn; with a `tree`, each
        node's noise comes from node_generator(transition, node) instead. record_velocity keeps the
        velocity of every transition (`velocities`: an anchor hands its own to a tree rooted on it)."""
        transitions = tuple(transitions)
        if any(a.j != b.i for a, b in zip(transitions, transitions[1:])):
            raise ValueError("transitions must be contiguous")
        rows = x.shape[0]
        if tree is not None:
            if tree.rows != rows:
                raise ValueError(f"a tree of {tree.rows} leaves for {rows} rows")
            if any(t.stochastic for t in transitions) and node_generator is None:
                raise ValueError("a tree's stochastic transitions need a node generator")
        elif any(t.stochastic for t in transitions) and (generators is None or len(generators) != rows):
            raise ValueError("a stochastic transition needs one generator per batch row")
        self.embeds = embeds if len(embeds) == rows else embeds.select([0] * rows)
        self.sigmas, self.transitions, self.generators = sigmas, transitions, generators
        self.tree, self.node_generator = tree, node_generator
        self.velocities: list[torch.Tensor] | None = [] if record_velocity else None
        self.keep_latents = keep_latents
        # lanes built with one origin start from the same latent, conditioning and sigmas (E-GRPO's tails
        # of a branch group): while the transitions they have taken agree, their inputs are identical
        self.origin = origin
        self.x = x.float()
        self.x0_hat = None  # the data prediction x - sigma * v at the last transition's input
        self.latents, self.log_probs = [self.x], []
        self.pos = 0
        self.history = None  # (sigma, x0_hat) of the previous transition: DPM-Solver++(2M)'s multistep memory

    @property
    def share_key(self) -> Hashable:
        """Lanes with equal keys have identical inputs at their next transition: one forward serves them."""
        if self.origin is None:
            return self  # shares with no other lane
        return (self.origin, self.transitions[: self.pos], float(self.sigmas[self.next_i]))

    @property
    def inputs(self) -> torch.Tensor:
        """The distinct inputs of the next transition: every row, or one row per tree node."""
        return self.x if self.tree is None else self.x[self.tree.first_rows(self.pos - 1).to(self.x.device)]

    @property
    def input_embeds(self) -> PromptEmbeds:
        if self.tree is None:
            return self.embeds
        n = self.tree.nodes(self.pos - 1)
        return PromptEmbeds(self.embeds.prompt[:n], self.embeds.pooled[:n], self.embeds.text_ids)

    @property
    def done(self) -> bool:
        return self.pos == len(self.transitions)

    @property
    def next_i(self) -> int:
        return self.transitions[self.pos].i

    def noise(self, tr: Transition) -> torch.Tensor:
        """The standard-normal draw of the next (stochastic) transition, one per row (per node in a tree)."""
        shape = tuple(self.x.shape[1:])
        if self.tree is None:
            eps = randn_rows(shape, list(self.generators), device=self.x.device)
        else:
            k = self.pos
            nodes = randn_rows(shape, [self.node_generator(k, n) for n in range(self.tree.nodes(k))], device=self.x.device)
            eps = nodes[self.tree.node_of(k).to(self.x.device)]
        return eps if tr.noise_scale == 1.0 else eps * tr.noise_scale

    def advance(self, v: torch.Tensor) -> None:
        """Take the next transition given the velocity at the current distinct inputs (`inputs`)."""
        tr, x, sigmas = self.transitions[self.pos], self.x, self.sigmas
        if self.velocities is not None:
            self.velocities.append(v)
        if self.tree is not None:
            v = v[self.tree.node_of(self.pos - 1).to(v.device)]  # one velocity per node -> per row
        self.x0_hat = x - sigmas[tr.i].float() * v
        if tr.rule == DPM2:
            s, s_next = float(sigmas[tr.i]), float(sigmas[tr.j])
            x0 = self.x0_hat
            h = self.history
            x = dpm_solver_2m_step(x, x0, h and h[1], h and h[0], s, s_next)
            self.log_probs.append(torch.zeros(x.shape[0], device=x.device))
        else:
            noise = self.noise(tr) if tr.stochastic else None
            step = sde_step(x, v, sigmas, tr.i, tr.j, rule=tr.rule, eta=tr.eta, noise=noise)
            x = step.prev_sample
            self.log_probs.append(step.log_prob)
        # every evaluation feeds the multistep memory, so the first DPM step after MixGRPO-Flash's SDE
        # window is already second order, as the release's sampler does
        self.history = (float(sigmas[tr.i]), self.x0_hat)
        self.x = x
        self.pos += 1
        if self.keep_latents or self.done:
            self.latents.append(x)

    def trajectory(self, images: torch.Tensor | None = None) -> Trajectory:
        lp = torch.stack(self.log_probs, dim=1) if self.log_probs else torch.zeros(self.x.shape[0], 0, device=self.x.device)
        return Trajectory(self.transitions, self.latents, lp, images)


@torch.no_grad()
def run_lanes(backbone: FluxBackbone, lanes: Sequence[Lane], *, height: int, width: int,
              max_batch: int | None = None) -> int:
    """Advance all lanes to their ends in lockstep: each round batches every lane whose next
    transition starts at the smallest pending step index into one forward pass (rows at different
    sigmas are fine: the timestep is per row), chunked to `max_batch` rows. Returns the number of
    forward calls. A row's result does not depend on which lanes it was batched with (up to float
    summation order in the matmuls)."""
    calls = 0
    while True:
        pending = [lane for lane in lanes if not lane.done]
        if not pending:
            return calls
        k = min(lane.next_i for lane in pending)
        ready = [lane for lane in pending if lane.next_i == k]
        chunks, cur, size = [], [], 0
        for lane in ready:  # greedy chunks of whole lanes, at most max_batch rows when possible
            rows = lane.inputs.shape[0]
            if cur and max_batch and size + rows > max_batch:
                chunks.append(cur)
                cur, size = [], 0
            cur.append(lane)
            size += rows
        chunks.append(cur)
        for chunk in chunks:
            shared: dict[Hashable, list[Lane]] = {}
            for lane in chunk:
                shared.setdefault(lane.share_key, []).append(lane)
            uniq = [group[0] for group in shared.values()]
            inputs = [lane.inputs for lane in uniq]  # a tree lane forwards each node once
            x = torch.cat(inputs)  # [sum of rows, N, C]
            sigma = torch.cat([lane.sigmas[k].expand(xs.shape[0]) for lane, xs in zip(uniq, inputs)])
            embeds = [lane.input_embeds for lane in uniq]
            e = embeds[0] if len(uniq) == 1 else PromptEmbeds(
                torch.cat([e.prompt for e in embeds]), torch.cat([e.pooled for e in embeds]), embeds[0].text_ids)
            v = backbone.velocity(x, sigma, e, height, width)
            calls += 1
            for group, v_lane in zip(shared.values(), v.split([xs.shape[0] for xs in inputs])):
                for lane in group:
                    lane.advance(v_lane)


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
    lane = Lane(embeds, sigmas, transitions, x, generators, keep_latents=keep_latents)
    run_lanes(backbone, [lane], height=height, width=width)
    return lane.trajectory(backbone.decode(lane.x, height, width) if decode else None)


def initial_noise(backbone: FluxBackbone, generators: Sequence[torch.Generator], height: int, width: int) -> torch.Tensor:
    """x at sigma = 1: one packed standard-normal row per generator."""
    return randn_rows(backbone.packed_shape(height, width), list(generators), device=backbone.device)
