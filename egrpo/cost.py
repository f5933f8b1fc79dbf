"""What one iteration of a method costs, counted by running its plan through the real sampler and
unit builder on a stand-in backbone (one-token latents, no network): transformer rows spent sampling
and training, trained pairs, AdamW steps, decoded images, and the largest forward of each phase.

The counts are the ones the trainer logs (`passes/sampling`, `passes/training`) for the same config,
so budgets are set and compared in passes without training anything (`python -m egrpo.cost`);
the memory plan (`egrpo memory`) takes its batch shapes from here.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import torch

from .flux import PromptEmbeds
from .methods import MethodConfig, build_plan


class StandInBackbone:
    """FluxBackbone's sampling interface without a network: velocity(x) = `velocity`(x, sigma)
    (zero by default), latents of `tokens` x `channels`, one-pixel images; counts rows per forward."""

    def __init__(self, tokens: int = 1, channels: int = 1, velocity=None):
        self.device = torch.device("cpu")
        self.shape = (tokens, channels)
        self.fn = velocity or (lambda x, sigma: torch.zeros_like(x))
        self.passes = 0
        self.batches: list[int] = []

    def packed_shape(self, height: int, width: int) -> tuple[int, int]:
        return self.shape

    def velocity(self, x, sigma, embeds, height, width, module=None):
        self.passes += x.shape[0]
        self.batches.append(x.shape[0])
        return self.fn(x.float(), torch.as_tensor(sigma, dtype=torch.float32).view(-1, *[1] * (x.ndim - 1)))

    def decode(self, x, height, width):
        return x.float().mean(dim=(1, 2)).view(-1, 1, 1, 1).expand(-1, 3, 1, 1)


def stand_in_embeds() -> PromptEmbeds:
    return PromptEmbeds(torch.zeros(1, 1, 1), torch.zeros(1, 1), torch.zeros(1, 3))


@dataclass(frozen=True)
class IterationCost:
    """Per iteration, for `prompts` prompts (one rank's share)."""

    sampling_rows: int  # transformer rows (passes) of the sampling phase
    training_rows: int  # distinct inputs forwarded (and backpropagated) in training
    trained_pairs: int  # (sample, transition) pairs in the loss
    updates: int  # AdamW steps
    images: int  # decoded and rewarded images
    sampling_batch: int  # the largest sampling forward
    training_batch: int  # the largest training forward
    sampling_forwards: int  # transformer calls of the sampling phase
    training_forwards: int  # transformer calls (forward and backward) of the training phase

    @property
    def passes(self) -> int:
        return self.sampling_rows + self.training_rows


def iteration_cost(method: MethodConfig, prompts: int, *, iteration: int = 0, sample_batch: int | None = None,
                   micro_batch: int = 12, every_row_trains: bool = False, seed_key: tuple | None = None) -> IterationCost:
    """One iteration of `method` for `prompts` prompts, counted. every_row_trains: every row trains
    every trainable transition (DanceGRPO trains a random subset per row): the largest training
    forward any iteration can reach, for the memory plan. seed_key: a run's (name, method, seed,
    iteration), whose random subsets it then counts."""
    from .rollout import GroupSample, Prompt, sample_iteration, train_units, training_batches

    backbone = StandInBackbone()
    plan = build_plan(method).for_iteration(iteration)
    if every_row_trains:
        plan = dataclasses.replace(plan, rollouts=tuple(dataclasses.replace(r, train_per_row=None)
                                                         for r in plan.rollouts))
    slots = [Prompt(iteration * prompts + k, 0, "", stand_in_embeds()) for k in range(prompts)]  # the trainer's
    key = seed_key or ("cost", method.name, 0, iteration)
    sample = sample_iteration(backbone, plan, slots, key, method.group_size, 16, 16, max_batch=sample_batch)
    sampling = backbone.passes, max(backbone.batches, default=0), len(backbone.batches)
    units = []
    for group in sample.groups:
        g: GroupSample = group
        shape = (len(g.log_probs),) if g.rollout.edges is None else tuple(g.log_probs.shape)
        g.advantages = torch.zeros(shape)
        units += train_units(g, key, micro_batch, method)
    forwards = [f for step in training_batches(units, micro_batch) for f in step]
    return IterationCost(sampling[0], sum(len(u.x) for f in forwards for u in f),
                         sum(len(u.prev) for f in forwards for u in f), len({u.update for u in units}),
                         sum(len(im) for g in sample.groups for im in g.images.values()), sampling[1],
                         max((sum(len(u.x) for u in f) for f in forwards), default=0), sampling[2], len(forwards))


def main(argv: list[str] | None = None) -> None:
    """Print each method's iteration and run cost under a config: a Snakemake config (several files
    merge as Snakemake merges them: its methods, first reward setting) or a run config; without
    one, each registered method's defaults for one prompt."""
    from .config import deep_merge, read_yaml, resolve
    from .experiment import Experiment
    from .methods import registry

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--config", nargs="*", default=[], help="config file(s), later ones overriding earlier ones")
    p.add_argument("--methods", nargs="*", help="methods to count (default: the config's, or every registered)")
    p.add_argument("--iterations", type=int, help="iterations to average (windows and pruning move; default: "
                   "the run's, at most 50)")
    args = p.parse_args(argv)
    raw: dict = {}
    for path in args.config:
        raw = deep_merge(raw, read_yaml(path) or {})
    exp = Experiment.load(raw) if "training" in raw else None
    names = args.methods or (exp.methods if exp else list(registry()))
    print(f"{'method':14s} {'prompts':>7s} {'iters':>5s} {'sampling':>9s} {'training':>9s} {'passes':>8s} "
          f"{'per prompt':>10s} {'pairs':>6s} {'updates':>7s} {'forwards':>8s} {'images':>6s} {'run passes':>11s}")
    for name in names:
        if exp:
            cfg = exp.run_config(next(iter(exp.settings)), name)
        elif raw:
            cfg = resolve(raw, name)
        else:
            cfg = None
        method = cfg.method if cfg else registry()[name].config()
        prompts = cfg.train.prompts_per_iteration if cfg else 1
        total = cfg.train.iterations if cfg else 1
        n = args.iterations or min(total, 50)
        costs = [iteration_cost(method, prompts, iteration=it, sample_batch=cfg.train.sample_batch if cfg else None,
                                micro_batch=cfg.train.micro_batch if cfg else 12) for it in range(n)]
        mean = {f.name: sum(getattr(c, f.name) for c in costs) / len(costs) for f in dataclasses.fields(IterationCost)}
        passes = mean["sampling_rows"] + mean["training_rows"]
        print(f"{name:14s} {prompts:7d} {total:5d} {mean['sampling_rows']:9.0f} {mean['training_rows']:9.0f} "
              f"{passes:8.0f} {passes / prompts:10.0f} {mean['trained_pairs']:6.0f} {mean['updates']:7.1f} "
              f"{mean['sampling_forwards'] + mean['training_forwards']:8.0f} {mean['images']:6.0f} {passes * total:11,.0f}")


if __name__ == "__main__":
    main()
