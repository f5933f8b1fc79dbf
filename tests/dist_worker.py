"""Worker of tests/test_distributed.py, launched by torchrun with CPU processes (gloo).

    torchrun --nproc-per-node 2 tests/dist_worker.py nan CONFIG OUT
    torchrun --nproc-per-node 2 tests/dist_worker.py sharded_grads CONFIG OUT
    torchrun --nproc-per-node 2 tests/dist_worker.py gathers CONFIG OUT
"""

import json
import sys
from pathlib import Path

import torch

from egrpo import distributed as dist
from egrpo.config import load_config
from egrpo.errors import TrainingError
from egrpo.rewards import register
from egrpo.trainer import Trainer


def nan_on_rank_one(options, device):
    """A reward that fails on rank 1 only, at its second call: every rank must stop with the same error."""
    calls = {"n": 0}

    def fn(images, prompts):
        calls["n"] += 1
        bad = dist.rank() == 1 and calls["n"] == 2
        return images.mean(dim=(1, 2, 3)) * (float("nan") if bad else 1.0)

    return fn


register("nan_on_rank_one", nan_on_rank_one)


def boom_on_rank_one(options, device):
    """A reward that fails on rank 1 only with an error no rank agrees on (as a CUDA OOM would)."""
    def fn(images, prompts):
        if dist.rank() == 1:
            raise RuntimeError("boom on rank 1")
        return images.mean(dim=(1, 2, 3))

    return fn


register("boom_on_rank_one", boom_on_rank_one)


def report(out: str, rank: int, row: dict) -> None:
    """Each rank's result in its own file: lines two ranks print to one pipe can interleave."""
    path = Path(out) / f"worker_rank{rank}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rank": rank, **row}))


def main(mode: str, config: str, out: str) -> None:
    if mode == "teardown":  # egrpo's own command line, with a group teardown that blocks (as NCCL's can)
        import time

        from egrpo.cli import main as cli

        torch.distributed.destroy_process_group = lambda *a, **k: time.sleep(3600)
        sys.exit(cli(["train", "--config", config, "--out", out, "--no-progress"]))
    cfg = load_config(config)
    if mode == "nan":
        trainer = Trainer(cfg, out, progress=False)
        try:
            trainer.train()
            result = "finished"
        except TrainingError as e:
            result = f"TrainingError: {e}"
        report(out, trainer.rank, {"result": result})
    elif mode == "sharded_grads":
        # egrpo's wrap and no_sync around several backward passes of one optimizer step, as the
        # trainer runs them: under FSDP2 every backward must reduce-scatter into sharded gradients
        trainer = Trainer(cfg, out, progress=False)
        model, full = trainer.model, 0
        groups = [m._get_fsdp_state()._fsdp_param_group for m in model.modules() if hasattr(m, "_get_fsdp_state")]
        for k in range(3):
            with dist.no_sync(model, skip=k < 2):
                x = torch.randn(2, *trainer.backbone.packed_shape(32, 32), generator=torch.Generator().manual_seed(k))
                e = trainer.embeds(trainer.iteration_prompts(0)[0][1])
                trainer.backbone.velocity(x, torch.tensor(0.5), e, 32, 32, module=model).square().mean().backward()
            full += sum(fp._unsharded_param.grad is not None for g in groups if g is not None for fp in g.fsdp_params
                        if getattr(fp, "_unsharded_param", None) is not None)
        report(out, trainer.rank, {"full_grads": full,
                                   "sharded": all(type(p.grad).__name__ == "DTensor" for p in trainer.params),
                                   "local": sum(p.grad.to_local().numel() for p in trainer.params),
                                   "global": sum(p.numel() for p in trainer.params)})
    elif mode == "gathers":
        # one iteration with the model kept gathered through sampling (the plan's choice here) and one
        # gathered per forward, from the same weights: FSDP2's all-gathers counted in each phase
        counts, rows = {}, {}

        def counted(real):
            def counting(*args, **kwargs):
                counts[phase] = counts.get(phase, 0) + 1
                return real(*args, **kwargs)
            return counting

        for name in ("all_gather_single", "all_gather_into_tensor"):  # FSDP2's all-gather, by torch version
            if hasattr(torch.distributed, name):
                setattr(torch.distributed, name, counted(getattr(torch.distributed, name)))
        for keep in (True, False):
            trainer = Trainer(cfg, f"{out}/{keep}", progress=False)
            planned, trainer.keep_gathered = trainer.keep_gathered, keep
            update = trainer.update

            def update_counted(*args, trainer=trainer, update=update, keep=keep):
                global phase
                phase = f"training {keep}"
                return update(*args)

            trainer.update = update_counted
            global phase
            phase, p0 = f"sampling {keep}", trainer.backbone.passes
            calls = {"n": 0}
            velocity = trainer.backbone.velocity

            def counted_velocity(*args, calls=calls, velocity=velocity, **kwargs):
                calls["n"] += torch.is_grad_enabled() is False
                return velocity(*args, **kwargs)

            trainer.backbone.velocity = counted_velocity
            row = trainer.step(0)
            rows[str(keep)] = {"reward": row["reward/brightness/mean"], "loss": row["loss"], "planned": planned,
                               "sampling_forwards": calls["n"], "fsdp_modules": sum(
                                   hasattr(m, "_get_fsdp_state") for m in trainer.model.modules())}
        report(out, trainer.rank, {"counts": counts, "rows": rows})
    dist.destroy()


phase = None

if __name__ == "__main__":
    main(*sys.argv[1:])
