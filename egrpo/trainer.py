"""The one GRPO trainer: every method is a RolloutPlan, the loop is the same.

    sample (plan) -> score (rewards) -> advantages (per group) -> PPO-clip update -> log/checkpoint

One AdamW step per iteration on the loss averaged over every trained (sample, transition) pair of
the global batch. For E-GRPO that is the paper's "average over active steps"; for DanceGRPO and
MixGRPO it is what their FLUX scripts do with gradient_accumulation_steps = num_generations (each
per-sample loss divided by accumulation steps x trained steps, one step per iteration).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from . import distributed as dist
from .checkpoint import atomic_save, export_trained, load_trainable_state, trainable_state
from .config import Config
from .errors import NonFiniteRewardError, TrainingError
from .flux import FluxBackbone
from .methods import build_plan
from .objectives import clipped_ratio_loss, combine_advantages, granularity_advantages
from .prompts import load_prompts
from .rewards import build_reward, score
from .rollout import sample_iteration, train_units
from .sde import sde_step
from .seeding import derive_seed, generator


class Trainer:
    def __init__(self, cfg: Config, out_dir: str | Path, *, backbone: FluxBackbone | None = None,
                 rewards: dict | None = None, progress: bool = True):
        self.cfg, self.out = cfg, Path(out_dir)
        self.device = dist.local_device(cfg.model.device)
        self.rank, self.world = dist.init_from_env(self.device)
        if cfg.train.prompts_per_iteration % self.world:
            raise ValueError(f"train.prompts_per_iteration ({cfg.train.prompts_per_iteration}) must be divisible "
                             f"by the number of processes ({self.world}): groups stay whole on a rank")
        if self.device.type == "cuda":  # process-wide switch; training's attention backward is what faulted
            torch.backends.cuda.enable_cudnn_sdp(cfg.model.cudnn_attention)
        self.plan = build_plan(cfg.method)
        self.prompts = load_prompts(cfg.train.prompts)
        m = cfg.model
        self.backbone = backbone or FluxBackbone.from_pretrained(
            m.path, device=self.device, dtype=m.dtype, guidance=m.guidance, max_sequence_length=m.max_sequence_length,
            decode_batch=m.decode_batch)
        self.backbone.enable_training(lora_rank=m.lora_rank or None, lora_alpha=m.lora_alpha,
                                      gradient_checkpointing=m.gradient_checkpointing,
                                      init_seed=derive_seed(cfg.name, cfg.method.name, cfg.seed, "lora_init"))
        self.model = dist.wrap(self.backbone.transformer, cfg.train.parallel, self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(self.params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
        self.weights = cfg.rewards.weight_map()
        self.rewards = rewards if rewards is not None else {
            n: build_reward(n, cfg.rewards.options.get(n), self.device) for n in cfg.rewards.names}
        self.progress = progress and self.rank == 0
        self.start = 0
        self._embeds: dict[int, object] = {}

    # ---- bookkeeping ----------------------------------------------------------------------
    @property
    def ckpt_path(self) -> Path:
        return self.out / "checkpoints" / "last.pt"

    @property
    def log_path(self) -> Path:
        return self.out / "log.jsonl"

    def seed_key(self, iteration: int) -> tuple:
        c = self.cfg
        return (c.name, c.method.name, c.seed, iteration)

    def prompt_ids(self, iteration: int) -> list[int]:
        """This rank's share of the iteration's prompts: a seeded permutation per epoch, same for all
        methods (so methods see the same prompts at the same iteration)."""
        n, per_it = len(self.prompts), self.cfg.train.prompts_per_iteration
        ids = []
        for slot in range(iteration * per_it, (iteration + 1) * per_it):
            epoch, pos = divmod(slot, n)
            perm = torch.randperm(n, generator=generator(self.cfg.name, self.cfg.seed, "prompts", epoch))
            ids.append(int(perm[pos]))
        share = per_it // self.world
        return ids[self.rank * share:(self.rank + 1) * share]

    def embeds(self, pid: int):
        if pid not in self._embeds:
            self._embeds[pid] = self.backbone.encode_prompts([self.prompts[pid]])
            if len(self._embeds) > 4096:
                self._embeds.pop(next(iter(self._embeds)))
        return self._embeds[pid]

    # ---- one iteration ----------------------------------------------------------------------
    def step(self, it: int) -> dict:
        cfg, bb = self.cfg, self.backbone
        h, w, g = cfg.model.height, cfg.model.width, self.plan.group_size
        key = self.seed_key(it)
        t0, p0 = time.perf_counter(), bb.passes

        # ---- sample
        plan = self.plan.for_iteration(it)
        prompts = [(pid, self.embeds(pid)) for pid in self.prompt_ids(it)]
        groups = sample_iteration(bb, plan, prompts, key, g, h, w, cfg.train.sample_batch)
        t1, p1 = time.perf_counter(), bb.passes

        # ---- score: every image of this rank in one call per reward
        images = torch.cat([im for grp in groups for im in grp.images])
        texts = [self.prompts[grp.prompt_id] for grp in groups for im in grp.images for _ in range(len(im))]
        try:
            scores = {n: score(fn, n, images, texts) for n, fn in self.rewards.items()}
        except NonFiniteRewardError as e:
            raise TrainingError(f"iteration {it}: {e}") from None
        t2 = time.perf_counter()

        # ---- advantages, normalised within each group (per tail, then summed)
        units, pos = [], 0
        for grp in groups:
            per_tail = []
            for _ in grp.images:
                per_tail.append(combine_advantages({n: s[pos:pos + g] for n, s in scores.items()}, self.weights,
                                                   cfg.rewards.aggregation, clip=cfg.optim.adv_clip))
                pos += g
            units += train_units(grp, granularity_advantages(per_tail), key, cfg.train.micro_batch)

        # ---- update
        stats = self.update(units, it)
        t3 = time.perf_counter()
        row = {"iteration": it}
        for n, s in scores.items():
            s = dist.all_gather_cat(s)
            row[f"reward/{n}/mean"], row[f"reward/{n}/std"] = float(s.mean()), float(s.std())
        row.update(stats)
        row.update({
            "passes/sampling": int(dist.all_reduce(torch.tensor(p1 - p0))),
            "passes/training": int(dist.all_reduce(torch.tensor(bb.passes - p1))),
            "time/sampling": t1 - t0, "time/reward": t2 - t1, "time/training": t3 - t2, "time/total": t3 - t0,
        })
        return row

    def update(self, units, it: int) -> dict:
        """PPO-clip on every trained pair, one optimizer step. Ranks run equally many backward passes
        (padded with zero-weight repeats) so gradient synchronisation lines up."""
        cfg, bb = self.cfg, self.backbone
        n_units = int(dist.all_reduce(torch.tensor(len(units)), "max"))
        total_rows = float(dist.all_reduce(torch.tensor(float(sum(len(u.prev) for u in units)))))
        scale = self.world / total_rows  # DDP/FSDP average over ranks -> global mean over pairs
        loss_sum, ratio_sum, clipped, ratio_dev = 0.0, 0.0, 0.0, 0.0
        for k in range(n_units):
            u, weight = (units[k], 1.0) if k < len(units) else (units[0], 0.0)
            with dist.no_sync(self.model, skip=k < n_units - 1):
                v = bb.velocity(u.x, u.sigmas[u.i], u.embeds, cfg.model.height, cfg.model.width, module=self.model)
                step = sde_step(u.x[u.index], v[u.index], u.sigmas, u.i, u.j, rule=u.rule, eta=u.eta, prev_sample=u.prev)
                loss_rows, ratio, was_clipped = clipped_ratio_loss(step.log_prob, u.old_log_prob, u.advantages,
                                                                   cfg.optim.clip_range)
                loss = loss_rows.sum() * scale * weight
                if not torch.isfinite(loss):
                    raise TrainingError(f"iteration {it}: non-finite loss ({float(loss)}); last checkpoint kept")
                loss.backward()
            loss_sum += float(loss_rows.detach().sum()) * weight
            ratio_sum += float(ratio.sum()) * weight
            clipped += float(was_clipped.sum()) * weight
            ratio_dev = max(ratio_dev, float((ratio - 1).abs().max()) * weight)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.optim.grad_clip)
        grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        if not math.isfinite(grad_norm):
            raise TrainingError(f"iteration {it}: non-finite gradient norm; last checkpoint kept")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        sums = dist.all_reduce(torch.tensor([loss_sum, ratio_sum, clipped], dtype=torch.float64))
        return {"loss": float(sums[0]) / total_rows, "ratio/mean": float(sums[1]) / total_rows,
                "clip_fraction": float(sums[2]) / total_rows,
                "ratio/max_dev": float(dist.all_reduce(torch.tensor(ratio_dev), "max")),
                "grad_norm": grad_norm, "trained_pairs": int(total_rows)}

    # ---- the loop ---------------------------------------------------------------------------
    def resume(self) -> int:
        """Load the last checkpoint if any; truncate the log to the iterations it covers."""
        if not self.ckpt_path.is_file():
            return 0
        ck = torch.load(self.ckpt_path, map_location="cpu", weights_only=False)
        load_trainable_state(self.model, self.optimizer, ck["model"], ck["optimizer"])
        self.start = ck["iteration"]
        if self.rank == 0 and self.log_path.is_file():
            rows = [r for r in map(json.loads, self.log_path.read_text().splitlines()) if r["iteration"] < self.start]
            self.log_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return self.start

    def save_checkpoint(self, iteration: int) -> dict:
        """Gather and write the checkpoint; returns the gathered trainable weights."""
        model_sd, optim_sd = trainable_state(self.model, self.optimizer)
        if self.rank == 0:
            atomic_save({"iteration": iteration, "model": model_sd, "optimizer": optim_sd,
                         "config": self.cfg.model_dump(mode="json")}, self.ckpt_path)
        dist.barrier()
        return model_sd

    def train(self) -> Path:
        """Run (or resume) to cfg.train.iterations; returns the exported final/ directory."""
        from tqdm import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        start = self.resume()
        if start and self.rank == 0:
            print(f"resuming from the checkpoint at iteration {start} ({self.ckpt_path})", flush=True)
        if self.rank == 0:
            (self.out / "config.json").write_text(json.dumps(self.cfg.model_dump(mode="json"), indent=2))
            (self.out / "provenance.json").write_text(json.dumps(provenance(self.cfg, self.device, self.world), indent=2))
        writer = _tensorboard(self.out) if self.rank == 0 else None
        total = self.cfg.train.iterations
        bar = tqdm(range(start, total), initial=start, total=total, disable=not self.progress,
                   desc=f"{self.cfg.method.name} seed {self.cfg.seed}")
        model_sd = None
        for it in bar:
            row = self.step(it)
            if self.rank == 0:
                with open(self.log_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                if writer:
                    for k, v in row.items():
                        writer.add_scalar(k, v, it)
                first = self.cfg.rewards.names[0]
                bar.set_postfix(reward=f"{row[f'reward/{first}/mean']:.4f}", loss=f"{row['loss']:.3g}")
            if (it + 1) % self.cfg.train.checkpoint_every == 0 or it + 1 == total:
                model_sd = self.save_checkpoint(it + 1)
        if model_sd is None:  # resumed at the end: nothing was gathered this run
            model_sd, _ = trainable_state(self.model)
        final = self.out / "final"
        if self.rank == 0:
            m = self.cfg.model
            lora = {"rank": m.lora_rank, "alpha": m.lora_alpha or m.lora_rank} if m.lora_rank else None
            final = export_trained(self.out, model_sd, m.path, lora)
        dist.barrier()
        return final


def provenance(cfg: Config, device: torch.device, world: int) -> dict:
    """What produced a run: git commit, config hash, package versions, device, seeds."""
    import importlib.metadata as md
    import platform
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).parent).stdout.strip() or None
    except OSError:
        commit = None
    versions = {}
    for pkg in ("torch", "diffusers", "transformers", "peft", "egrpo"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"git_commit": commit, "config_hash": cfg.digest(), "versions": versions, "python": platform.python_version(),
            "device": f"{device.type}: {name}", "processes": world, "seed": cfg.seed, "method": cfg.method.name,
            "seed_key": [cfg.name, cfg.method.name, cfg.seed]}


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional; the JSONL log is the record
        return None
    return SummaryWriter(str(out / "tensorboard"))
