"""The one GRPO trainer: every method is a RolloutPlan, the loop is the same.

    sample (plan) -> score (rewards) -> advantages (per group) -> PPO-clip updates -> log/checkpoint

An iteration takes as many AdamW steps as its method's update schedule says (`method.update`): one
per iteration (the E-GRPO paper's Alg. 1), one per rollout (E-GRPO's releases: per active step), or
one per block of samples (DanceGRPO's and MixGRPO's gradient accumulation). Each step's loss is the
mean over the (sample, transition) pairs it trains, over all ranks; steps after the first see
off-policy samples, whose ratios the PPO clip bounds, as in the releases.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import torch

from . import checkpoint, determinism, failures, progress
from . import distributed as dist
from .config import Config, resume_conflicts
from .digest import model_difference, model_digest
from .errors import ConfigError, InputError, NonFiniteRewardError, TrainingError
from .flux import FluxBackbone, check_image_size
from .memory import PhasePeaks, device_gib, keeps_gathered
from .methods import build_plan
from .prompts import load_prompts
from .rewards import build_reward, check_inputs, check_prompts
from .rollout import (Prompt, forward_inputs, forward_loss, group_advantages_of, sample_iteration, score_sample,
                      train_units, training_batches)
from .seeding import derive_seed, generator
from .startup import builds_sharded, sharded_transformer


class Trainer:
    def __init__(self, cfg: Config, out_dir: str | Path, *, backbone: FluxBackbone | None = None,
                 rewards: dict | None = None, progress: bool = True, on_config_change: str = "refuse"):
        """on_config_change: what a checkpoint of another config in out_dir gets: `refuse` (an error
        naming the keys that differ) or `restart` (it is removed and the run starts afresh). A failure
        of this run that a retry would repeat stops it here, before any model loads (egrpo.failures)."""
        self.cfg, self.out, self.on_config_change = cfg, Path(out_dir), on_config_change
        determinism.apply(cfg.determinism)  # before the first tensor operation: kernels are chosen at first use
        self.device = dist.local_device(cfg.model.device)
        self.rank, self.world = dist.init_from_env(self.device)
        failures.check(self.out, cfg, self.world, self.rank)
        self.iteration = None  # the iteration running (for the failure record)
        with failures.recorded(self.out, cfg, self.world, self.rank):
            self._start(backbone, rewards, progress)

    def _start(self, backbone: FluxBackbone | None, rewards: dict | None, progress: bool) -> None:
        """Start-up, each phase's peak memory recorded: the prompts encoded with the text encoders on the
        device, then the transformer's weights (FSDP2 full fine-tuning: sharded first, egrpo.startup)."""
        cfg = self.cfg
        self.peaks = PhasePeaks(self.device)
        self.peaks.start("start-up: prompts")
        if cfg.train.prompts_per_iteration % self.world:
            raise ConfigError(f"train.prompts_per_iteration ({cfg.train.prompts_per_iteration}) must be divisible "
                              f"by the number of processes ({self.world}): groups stay whole on a rank")
        if self.device.type == "cuda":  # process-wide switch; training's attention backward is what faulted
            # cuDNN attention has no deterministic backward in torch: off under determinism.gpu
            torch.backends.cuda.enable_cudnn_sdp(cfg.model.cudnn_attention and not cfg.determinism.gpu)
        self.plan = build_plan(cfg.method)
        self.prompts = load_prompts(cfg.train.prompts, key="train.prompts")
        check_prompts(cfg.rewards.names, self.prompts, "train.prompts")  # before any model loads
        if rewards is None:
            check_inputs(cfg.rewards.names, cfg.rewards.reward_options)
        check_image_size(cfg.model.path, cfg.model.height, cfg.model.width, "model")
        self._perms: dict[int, torch.Tensor] = {}  # epoch -> the prompt order of that epoch
        m = cfg.model
        sharded = backbone is None and dist.is_distributed() and builds_sharded(cfg.train.parallel, m.lora_rank)
        self.backbone = backbone or FluxBackbone.from_pretrained(
            m.path, device=self.device, dtype=m.dtype, guidance=m.guidance, max_sequence_length=m.max_sequence_length,
            decode_batch=m.decode_batch, transformer=not sharded)
        # every prompt this rank will train on, encoded once; then the text encoders leave the GPU
        self._embeds = {pid: None for it in range(cfg.train.iterations) for _, pid in self.iteration_prompts(it)}
        for pid in self._embeds:
            self._embeds[pid] = self.backbone.encode_prompts([self.prompts[pid]]).to("cpu")
        self.backbone.offload_text_encoders()
        self.peaks.start("start-up: weights")
        if sharded:  # each rank's fp32 shards only, rank 0 broadcasting the stored weights
            self.model = sharded_transformer(m.path, self.device, load_dtype=self.backbone.dtype,
                                             compute_dtype=self.backbone.dtype,
                                             gradient_checkpointing=m.gradient_checkpointing)
            self.backbone.attach(self.model)
        else:
            self.backbone.enable_training(lora_rank=m.lora_rank or None, lora_alpha=m.lora_alpha,
                                          gradient_checkpointing=m.gradient_checkpointing,
                                          init_seed=derive_seed(cfg.name, cfg.method.name, cfg.seed, "lora_init"))
            self.model = dist.wrap(self.backbone.transformer, cfg.train.parallel, self.device,
                                   param_dtype=self.backbone.dtype)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(self.params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
        # the optimizer step is a phase of its own; training forwards and backwards resume after it
        self.optimizer.register_step_pre_hook(lambda *_: self.peaks.start("optimizer step"))
        self.optimizer.register_step_post_hook(lambda *_: self.peaks.start("training step"))
        self.weights = cfg.rewards.weight_map()
        self.rewards = rewards if rewards is not None else {
            n: build_reward(n, cfg.rewards.reward_options(n), self.device) for n in cfg.rewards.names}
        # sampling's many forwards all-gather the model once, where the memory plan has room for it
        self.keep_gathered = keeps_gathered(cfg, self.world, device_gib(self.device))
        self.progress = progress and self.rank == 0
        self.start = 0
        self.peaks.start(None)

    # ---- bookkeeping ----------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints" / "last"

    @property
    def log_path(self) -> Path:
        return self.out / "log.jsonl"

    def seed_key(self, iteration: int) -> tuple:
        c = self.cfg
        return (c.name, c.method.name, c.seed, iteration)

    def iteration_prompts(self, iteration: int) -> list[tuple[int, int]]:
        """This rank's (slot, prompt id) pairs of an iteration: slots walk a seeded permutation of the
        prompt set per epoch, the same for every method (so methods see the same prompts at the same
        iteration); seeds derive from the slot."""
        n, per_it = len(self.prompts), self.cfg.train.prompts_per_iteration
        share = per_it // self.world
        out = []
        for slot in range(iteration * per_it + self.rank * share, iteration * per_it + (self.rank + 1) * share):
            epoch, pos = divmod(slot, n)
            if epoch not in self._perms:
                self._perms[epoch] = torch.randperm(n, generator=generator(self.cfg.name, self.cfg.seed, "prompts", epoch))
            out.append((slot, int(self._perms[epoch][pos])))
        return out

    def embeds(self, pid: int):
        return self._embeds[pid].to(self.device)

    # ---- one iteration ----------------------------------------------------------------------
    def step(self, it: int) -> dict:
        cfg, bb = self.cfg, self.backbone
        h, w, g = cfg.model.height, cfg.model.width, cfg.method.group_size
        key = self.seed_key(it)
        t0, p0 = time.perf_counter(), bb.passes

        # ---- sample (the model gathered once for all of it where the memory plan has room)
        self.peaks.start("sampling")
        prompts = [Prompt(slot, pid, self.prompts[pid], self.embeds(pid)) for slot, pid in self.iteration_prompts(it)]
        with dist.gathered(self.model, self.keep_gathered):
            sample = sample_iteration(bb, self.plan.for_iteration(it), prompts, key, g, h, w, cfg.train.sample_batch,
                                      probe=cfg.train.probe)
        t1, p1 = time.perf_counter(), bb.passes

        # ---- score every image of this rank; a non-finite reward stops every rank together
        error = None
        try:
            score_sample(sample, self.rewards, cfg.rewards.batch)
        except NonFiniteRewardError as e:
            error = f"iteration {it}: {e}; last checkpoint kept"
        dist.raise_together(error, TrainingError)
        t2 = time.perf_counter()

        # ---- advantages, normalised within each group (per tail, summed, clamped; per depth in a tree)
        units = []
        for grp in sample.groups:
            grp.advantages = group_advantages_of(grp, self.weights, cfg.rewards.aggregation, cfg.optim.adv_clip)
            units += train_units(grp, key, cfg.train.micro_batch, cfg.method)

        # ---- update
        self.peaks.start("training step")
        stats = self.update(units, it)
        t3 = time.perf_counter()
        return {"iteration": it, **self.reward_stats(sample), **stats,
                "passes/sampling": int(dist.all_reduce(torch.tensor(p1 - p0))),
                "passes/training": int(dist.all_reduce(torch.tensor(bb.passes - p1))),
                "passes/probe": int(dist.all_reduce(torch.tensor(sample.probe_passes))),
                "time/sampling": t1 - t0, "time/reward": t2 - t1, "time/training": t3 - t2, "time/total": t3 - t0,
                **self.memory_row()}

    def memory_row(self) -> dict:
        """Each phase's peak device memory since the last row (start-up's in the first row of a process),
        the largest over ranks: memory/<phase>_gib (CUDA only)."""
        peaks = self.peaks.take()
        return {k: float(dist.all_reduce(torch.tensor(v), "max")) for k, v in sorted(peaks.items())}

    def reward_stats(self, sample) -> dict:
        """reward/<name>/mean|std over every scored group image (the DanceGRPO/MixGRPO releases' curve);
        probe/<name>/mean over the prompts' ODE samples (the E-GRPO/G2RPO releases' curve: the
        anchor's image) and their per-prompt values in slot order (for compute-matched intervals)."""
        row = {}
        for n in self.cfg.rewards.names:
            s = dist.all_gather_cat(torch.cat([r[n] for grp in sample.groups for r in grp.rewards.values()]))
            row[f"reward/{n}/mean"], row[f"reward/{n}/std"] = float(s.mean()), float(s.std())
        if sample.probe_rewards:
            probes = dict(sorted(dist.all_gather_dict(sample.probe_rewards).items()))
            for n in self.cfg.rewards.names:
                values = [r[n] for r in probes.values()]
                row[f"probe/{n}/mean"], row[f"probe/{n}/prompts"] = sum(values) / len(values), values
        return row

    def update(self, units, it: int) -> dict:
        """PPO-clip over the iteration's units, one AdamW step per update block. Ranks run equally many
        backward passes per block (padded with zero-weight repeats) so gradient synchronisation lines
        up; a non-finite loss on any rank stops every rank before the step is applied."""
        cfg, bb = self.cfg, self.backbone
        n_updates = int(dist.all_reduce(torch.tensor(max((u.update for u in units), default=-1) + 1), "max"))
        steps = training_batches(units, cfg.train.micro_batch, n_updates)
        pad = units[:1]  # a zero-weight forward where this rank has fewer forwards than another
        loss_sum = ratio_sum = clipped = ratio_dev = first_dev = 0.0
        pairs, grad_norms = 0.0, []
        for k, mine in enumerate(steps):
            n_forwards = int(dist.all_reduce(torch.tensor(len(mine)), "max"))
            rows = float(dist.all_reduce(torch.tensor(float(sum(len(u.prev) for f in mine for u in f)))))
            if rows == 0:
                continue
            scale = self.world / rows  # DDP/FSDP average over ranks -> the step's mean over pairs
            bad = False
            for m in range(n_forwards):
                forward, weight = (mine[m], 1.0) if m < len(mine) else (pad, 0.0)
                with dist.no_sync(self.model, skip=m < n_forwards - 1):
                    x, sigma, embeds = forward_inputs(forward)
                    v = bb.velocity(x, sigma, embeds, cfg.model.height, cfg.model.width, module=self.model)
                    loss_rows, ratio, was_clipped = forward_loss(forward, v, cfg.optim.clip_range)
                    loss = loss_rows.sum() * scale * weight
                    bad |= not bool(torch.isfinite(loss))
                    loss.backward()
                loss_sum += float(loss_rows.detach().sum()) * weight
                ratio_sum += float(ratio.sum()) * weight
                clipped += float(was_clipped.sum()) * weight
                ratio_dev = max(ratio_dev, float((ratio - 1).abs().max()) * weight)
            if not grad_norms:  # the first step is on-policy: its ratios must be exactly 1
                first_dev = ratio_dev
            dist.raise_together(f"iteration {it}: non-finite loss; last checkpoint kept" if bad else None, TrainingError)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.optim.grad_clip)
            grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
            if not math.isfinite(grad_norm):  # the norm is global: every rank raises here together
                raise TrainingError(f"iteration {it}: non-finite gradient norm; last checkpoint kept")
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            pairs += rows
            grad_norms.append(grad_norm)
        sums = dist.all_reduce(torch.tensor([loss_sum, ratio_sum, clipped], dtype=torch.float64))
        return {"loss": float(sums[0]) / pairs, "ratio/mean": float(sums[1]) / pairs,
                "clip_fraction": float(sums[2]) / pairs,
                "ratio/max_dev": float(dist.all_reduce(torch.tensor(ratio_dev), "max")),
                "ratio/first_update_max_dev": float(dist.all_reduce(torch.tensor(first_dev), "max")),
                "grad_norm": max(grad_norms), "updates": len(grad_norms), "trained_pairs": int(pairs)}

    # ---- checkpoints and the log --------------------------------------------------------------
    def resume(self) -> int:
        """Load the last checkpoint if any (refusing one of another config) and cut the log to the
        iterations it covers; without one, start a fresh log."""
        meta = checkpoint.read_meta(self.ckpt_dir)
        # the base model by content (rank 0 records it): a checkpoint of another base is another config's
        self.base_digest = model_digest(self.cfg.model.path) if self.rank == 0 else None
        if meta is not None:
            conflicts = resume_conflicts(meta["config"], self.cfg.to_dict())
            if self.rank == 0 and (meta.get("base_digest") or {}).get("sha256") != self.base_digest["sha256"]:
                conflicts.append(f"model.path's content ({model_difference(meta['base_digest'], self.base_digest)})"
                                 if meta.get("base_digest") else "model.path's content (not recorded)")
            conflicts = [c for part in dist.all_gather_dict({self.rank: conflicts}).values() for c in part]
            conflicts = list(dict.fromkeys(conflicts))
            if conflicts and self.on_config_change == "restart":
                if self.rank == 0:
                    progress.log.info("%s is a checkpoint of another config (differs in %s): starting afresh",
                                      self.ckpt_dir, ", ".join(conflicts))
                    shutil.rmtree(self.ckpt_dir)
                dist.barrier()
                meta = None
            elif conflicts:
                raise ConfigError(f"{self.ckpt_dir} is a checkpoint of another config (differs in "
                                  f"{', '.join(conflicts)}); resume only continues a run of the same config "
                                  "(train.iterations may grow): use another --out, or delete the run directory")
        if meta is None:
            if self.rank == 0:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                self.log_path.write_text("")  # a run from iteration 0 starts a fresh log
                (self.out / "io.jsonl").unlink(missing_ok=True)
            return 0
        stats = checkpoint.load(self.ckpt_dir, self.model, self.optimizer)
        self.start = int(meta["iteration"])
        self.record_io("checkpoint loaded", iteration=self.start, **stats)
        if self.rank == 0:
            self.log_path.write_text("".join(json.dumps(r) + "\n" for r in read_log(self.log_path, before=self.start)))
        return self.start

    def save_checkpoint(self, iteration: int) -> None:
        """Write the sharded checkpoint, only of finite weights: a run whose weights blew up keeps the
        last finite checkpoint."""
        finite = all(bool(torch.isfinite(p.detach().to_local() if hasattr(p, "to_local") else p.detach()).all())
                     for p in self.params)
        dist.raise_together(None if finite else f"iteration {iteration}: the weights are no longer finite; "
                            "the last finite checkpoint is kept", TrainingError)
        stats = checkpoint.save(self.ckpt_dir, self.model, self.optimizer,
                                {"iteration": iteration, "config": self.cfg.to_dict(), "digest": self.cfg.digest(),
                                 "world": self.world, "base_digest": self.base_digest})
        self.record_io("checkpoint saved", iteration=iteration, **stats)

    def record_io(self, event: str, **stats) -> None:
        """One line of io.jsonl (rank 0): what a checkpoint save, resume or export moved, and how fast."""
        if self.rank == 0:
            with open(self.out / "io.jsonl", "a") as f:
                f.write(json.dumps({"event": event, **stats}) + "\n")

    def train(self) -> Path:
        """Run (or resume) to cfg.train.iterations; returns the exported final/ directory. A failure that
        a retry would repeat (a diverged run) is recorded in the run directory first (egrpo.failures)."""
        with failures.recorded(self.out, self.cfg, self.world, self.rank, lambda: self.iteration):
            return self._train()

    def _train(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        start = self.resume()
        if start and self.rank == 0:
            progress.log.info("resuming from the checkpoint at iteration %d (%s)", start, self.ckpt_dir)
        if self.rank == 0:
            (self.out / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
            (self.out / "provenance.json").write_text(json.dumps(provenance(self.cfg, self.device, self.world), indent=2))
        writer = _tensorboard(self.out) if self.rank == 0 else None
        total = self.cfg.train.iterations
        bar = progress.Progress(f"{self.cfg.method.name} seed {self.cfg.seed}", total, start, enabled=self.progress)
        for it in range(start, total):
            self.iteration = it
            row = self.step(it)
            if self.rank == 0:
                with open(self.log_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                if writer:
                    for k, v in row.items():
                        if isinstance(v, (int, float)):
                            writer.add_scalar(k, v, it)
                first = self.cfg.rewards.names[0]
                bar.step(**{f"reward/{first}": row[f"reward/{first}/mean"], "loss": row["loss"]})
            if (it + 1) % self.cfg.train.checkpoint_every == 0 or it + 1 == total:
                self.save_checkpoint(it + 1)
        m = self.cfg.model
        self.iteration = None
        t0 = time.perf_counter()
        weights = checkpoint.full_trainable_state(self.model, dtype=checkpoint.EXPORT_DTYPES[self.cfg.train.export_dtype])
        final, gather_s = self.out / "final", time.perf_counter() - t0
        if self.rank == 0:
            lora = {"rank": m.lora_rank, "alpha": m.lora_alpha or m.lora_rank} if m.lora_rank else None
            stats = checkpoint.export_trained(self.out, weights, m.path, lora, config=dict(dist.unwrap(self.model).config),
                                             base_digest=self.base_digest)
            self.record_io("exported", gather_s=round(gather_s, 3), **stats)
            final = self.out / "final"
        dist.barrier()
        if not self.cfg.train.keep_checkpoint and self.rank == 0:
            shutil.rmtree(self.ckpt_dir.parent, ignore_errors=True)
        return final


def read_log(path: Path, before: int) -> list[dict]:
    """The rows of a run's log.jsonl for iterations < `before`. A partial last line (a run killed while
    writing it) is dropped; a malformed line anywhere else is an error naming the file and line."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                break
            raise InputError(f"{path}: line {n} is not a JSON row; fix or delete the line to resume") from None
        if row.get("iteration", before) < before:
            rows.append(row)
    return rows


def provenance(cfg: Config, device: torch.device, world: int) -> dict:
    """What produced a run: git commit, config hash, package versions, seeds, and everything about the
    machine that decides its numbers (CPU and kernel libraries, threads, GPU stack, determinism switches)."""
    code = determinism.software()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else determinism.cpu_info()["model"]
    return {"git_commit": code["git_commit"], "config_hash": cfg.digest(), "versions": code["versions"],
            "python": code["python"], "libc": code["libc"], "os": code["os"], "device": f"{device.type}: {name}", "processes": world, "seed": cfg.seed,
            "method": cfg.method.name, "seed_key": [cfg.name, cfg.method.name, cfg.seed],
            "determinism": cfg.determinism.model_dump(), "environment": determinism.environment(device)}


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional; the JSONL log is the record
        return None
    return SummaryWriter(str(out / "tensorboard"))
