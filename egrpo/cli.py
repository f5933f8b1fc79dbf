"""Command line: `egrpo <command> ...` (also `python -m egrpo`).

Every user-facing failure (a bad config or input file, missing weights, a device that cannot be
used, a run that cannot go on, a full disk) ends in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _entropy(args) -> None:
    """Write the per-step / merged-step entropy table of a schedule as CSV (paper Fig. 1b's data)."""
    import pandas as pd

    from .errors import ConfigError
    from .merge import entropy_table, merge_lengths
    from .schedule import shifted_sigmas

    for flag, value, low in (("--steps", args.steps, 2), ("--max-len", args.max_len, 1)):
        if value < low:
            raise ConfigError(f"egrpo entropy {flag}: at least {low}, got {value}")
    for flag, value in (("--shift", args.shift), ("--eta", args.eta)):
        if not value > 0:
            raise ConfigError(f"egrpo entropy {flag}: must be > 0, got {value}")
    if args.tau < 0:
        raise ConfigError(f"egrpo entropy --tau: must be >= 0, got {args.tau}")
    sigmas = shifted_sigmas(args.steps, args.shift)
    table = entropy_table(sigmas, args.max_len, eta=args.eta, reading=args.reading)
    df = pd.DataFrame(table.numpy(), columns=[f"l={l}" for l in range(1, args.max_len + 1)])
    df.insert(0, "sigma", sigmas[:-1].numpy())
    df.insert(0, "step", range(args.steps))
    df["adaptive_l"] = merge_lengths(sigmas, range(args.steps - 1), tau=args.tau, eta=args.eta,
                                     reading=args.reading) + [None]
    _write(args.out, lambda p: df.to_csv(p, index=False, float_format="%.6g"))


def _write(path: str | Path, writer) -> None:
    """Create the parent folder and write; a full disk is a one-line error naming the path."""
    from .checkpoint import disk_error

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer(path)
    except OSError as e:
        error = disk_error(e, path)
        if error is None:
            raise
        raise error from None


def _train(args) -> None:
    """Train one method, one seed after another: `egrpo train --config FILE --seed N [N ...] --out DIR`.

    FILE is a run config (its method may be named by --method) or a resolved one the DAG writes.
    Paths may hold `{seed}`; with several seeds they must. One process for several seeds pays the
    library imports once, which the default world's short runs notice.
    """
    from .config import load_config

    if args.evaluate and not args.eval_out:
        raise SystemExit("egrpo train: --evaluate needs --eval-out")
    protocol = _read_protocol(args.evaluate) if args.evaluate else None  # a bad file fails before training
    seeds = args.seed or [None]  # None: the config's own seed
    paths = {"--out": args.out, "--eval-out": args.eval_out, "--eval-images": args.eval_images}
    shared = [flag for flag, path in paths.items() if path and "{seed}" not in path]
    if len(seeds) > 1 and shared:
        raise SystemExit(f"egrpo train: with several seeds {', '.join(shared)} must contain {{seed}}")
    configs = [load_config(args.config, args.method, seed, args.set, section=args.section) for seed in seeds]
    if protocol is not None:  # fail on a metric before any training, not after the first run
        _check_metrics(protocol)
    for cfg in configs:
        out, eval_out, eval_images = (p.replace("{seed}", str(cfg.seed)) if p else p for p in paths.values())
        _train_run(cfg, out, not args.no_progress, protocol, eval_out, eval_images, args.on_config_change)


def _train_run(cfg, out: str, progress: bool, protocol: dict | None, eval_out: str | None,
               eval_images: str | None, on_config_change: str) -> None:
    """One run, then (with a protocol) its evaluation in the same process; its models are freed on
    return, before the next seed's are loaded."""
    import gc

    from .checkpoint import load_trained
    from .trainer import Trainer

    trainer = Trainer(cfg, out, progress=progress, on_config_change=on_config_change)
    final = trainer.train()
    if trainer.rank == 0:
        print(f"trained weights: {final}", flush=True)
    if protocol is not None:  # saves a process start per run (see eval.with_training)
        device = trainer.device
        del trainer  # the trained weights are on disk; do not hold two models at once
        gc.collect()
        backbone = load_trained(final, device=device, max_sequence_length=protocol["max_sequence_length"])
        _evaluate_backbone(backbone, protocol, eval_out, eval_images)


def _world_build(args) -> None:
    """Write the shapes world: train/test prompt sets (`datasets` on disk) and the fidelity critic."""
    from .errors import ConfigError
    from .world.build import build_world

    if args.critic_steps < 1 or args.seed < 0:
        raise ConfigError("egrpo world build: --critic-steps must be >= 1 and --seed >= 0")
    build_world(args.out, seed=args.seed, critic_steps=args.critic_steps)


def _world_pretrain(args) -> None:
    """Pretrain the world's base model (tiny FLUX architecture) into a Flux-format directory."""
    from .errors import ConfigError
    from .world.pretrain import PretrainConfig, pretrain

    if min(args.vae_steps, args.flow_steps) < 1 or args.images < 16:
        raise ConfigError("egrpo world pretrain: --vae-steps and --flow-steps must be >= 1, --images >= 16")
    pretrain(args.out, PretrainConfig(vae_steps=args.vae_steps, flow_steps=args.flow_steps, seed=args.seed,
                                      n_images=args.images))


def _stand_ins(args) -> None:
    """Write tiny stand-ins of everything config/flux.yaml points at, and the overlay that uses them."""
    from .standins import write_stand_ins

    overlay = write_stand_ins(args.out)
    print(f"stand-ins written; run the paper's DAG on them with:\n  snakemake --cores all --configfile "
          f"config/flux.yaml {overlay}")


def _memory(args) -> None:
    """Per-GPU peak memory of a run config's training job, by component (and a warning when it exceeds
    the GPU): the plan to check before submitting."""
    from .config import load_config
    from .memory import plan_report

    cfg = load_config(args.config, args.method, None, args.set, section=args.section)
    print(plan_report(cfg, gpus=args.gpus, gpu_gib=args.gpu_gib))


PROTOCOL_KEYS = ("prompts", "limit", "metrics", "sampler", "max_sequence_length")


def _read_protocol(path: str) -> dict:
    """An evaluation protocol file (JSON with PROTOCOL_KEYS; the DAG writes results/configs/eval.json)."""
    from .errors import ConfigError
    from .evaluate import EvalSpec

    try:
        protocol = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"evaluation protocol {path} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"evaluation protocol {path} is not valid JSON ({e})") from None
    if not isinstance(protocol, dict):
        raise ConfigError(f"evaluation protocol {path}: a JSON object, got {type(protocol).__name__}")
    missing = {"prompts", "metrics"} - set(protocol)
    unknown = set(protocol) - set(PROTOCOL_KEYS)
    if missing or unknown:
        raise ConfigError(f"evaluation protocol {path}: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
    protocol = {"limit": None, "sampler": {}, "max_sequence_length": 512, **protocol}
    EvalSpec.from_dict(protocol["sampler"], f"{path}: sampler")
    if not isinstance(protocol["metrics"], dict) or not all(isinstance(m, dict) and "reward" in m
                                                            for m in protocol["metrics"].values()):
        raise ConfigError(f"evaluation protocol {path}: metrics maps labels to {{reward, options}}")
    return protocol


def _check_metrics(protocol: dict) -> None:
    """Every metric's reward is registered and has its required options (files are checked on load)."""
    from .errors import ConfigError
    from .rewards import missing_options, reward_spec

    for label, m in protocol["metrics"].items():
        reward_spec(m["reward"], f"metrics.{label}")
        for key in missing_options(m["reward"], m.get("options")):
            raise ConfigError(f"metrics.{label}: reward {m['reward']!r} needs options.{key}")


def _evaluate_backbone(backbone, protocol: dict, out: str, images: str | None) -> None:
    """Sample and score the protocol's prompts (sharded over ranks), write the per-image CSV and,
    on rank 0, its per-metric summary beside it."""
    from . import distributed as dist
    from .evaluate import EvalSpec, evaluate, summarise
    from .prompts import load_prompts
    from .rewards import build_reward

    _check_metrics(protocol)
    rank, world = dist.init_from_env(backbone.device)
    prompts = load_prompts(protocol["prompts"], key="protocol prompts")[: protocol["limit"] or None]
    metrics = {label: build_reward(m["reward"], m.get("options"), backbone.device)
               for label, m in protocol["metrics"].items()}
    df = evaluate(backbone, prompts, metrics, EvalSpec.from_dict(protocol["sampler"]), rank=rank, world=world,
                  image_dir=images)
    out = Path(out)
    part = out if world == 1 else out.with_suffix(f".rank{rank}.csv")
    _write(part, lambda p: df.to_csv(p, index=False))
    if world > 1:
        dist.barrier()
        if rank == 0:
            import pandas as pd

            parts = [out.with_suffix(f".rank{r}.csv") for r in range(world)]
            df = pd.concat(map(pd.read_csv, parts)).sort_values(["prompt_index", "sample"])
            df.to_csv(out, index=False)
            for p in parts:
                p.unlink()
    if rank == 0 and metrics:
        weights = getattr(backbone, "weights_id", "base")
        summarise(df, list(metrics), weights).to_csv(out.with_suffix(".summary.csv"), index=False)


def _load_model(model: str | None, run: str | None, msl: int, device):
    """The base model (a Flux-format directory) or a training run's final weights on top of it."""
    from .checkpoint import load_trained
    from .flux import FluxBackbone

    if run is not None:
        return load_trained(Path(run) / "final", device=device, max_sequence_length=msl)
    return FluxBackbone.from_pretrained(model, device=device, max_sequence_length=msl)


def _evaluate(args) -> None:
    """Sample the test prompts with per-prompt seeds and score every metric (per-image CSV)."""
    from . import distributed as dist

    if args.protocol:
        protocol = _read_protocol(args.protocol)
    elif args.prompts and args.metrics is not None:
        protocol = {"prompts": args.prompts, "limit": args.limit, "metrics": _json_arg("--metrics", args.metrics),
                    "sampler": _json_arg("--sampler", args.sampler), "max_sequence_length": args.max_sequence_length}
    else:
        raise SystemExit("egrpo evaluate: give --protocol FILE, or --prompts and --metrics")
    _check_metrics(protocol)
    backbone = _load_model(args.model, args.run, protocol["max_sequence_length"], dist.local_device(args.device))
    _evaluate_backbone(backbone, protocol, args.out, args.images)


def _json_arg(flag: str, text: str):
    from .errors import ConfigError

    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{flag}: not valid JSON ({e})") from None


def _render(args) -> None:
    """The same prompts and seeds through several models, one image folder each (Figs. 5-7)."""
    import gc

    from . import distributed as dist
    from .evaluate import EvalSpec, generate, save_images
    from .prompts import load_prompts

    protocol = _read_protocol(args.protocol)
    prompts = load_prompts(args.prompts, key="--prompts")
    spec = EvalSpec.from_dict(protocol["sampler"])
    bad = [r for r in args.run if "=" not in r]
    if bad:
        raise SystemExit(f"egrpo render: --run takes NAME=RUN_DIR, got {bad[0]!r}")
    device = dist.local_device(args.device)
    for name, run in [("base", None)] + [tuple(r.split("=", 1)) for r in args.run]:
        backbone = _load_model(args.model, run, protocol["max_sequence_length"], device)
        images = generate(backbone, prompts, range(len(prompts)), spec)
        save_images(images, [f"{k:05d}.png" for k in range(len(prompts))], Path(args.out) / name)
        del backbone  # one model on the device at a time
        gc.collect()


def _variance(args) -> None:
    """Reward std over G branches of a one-step SDE at each step, unmerged and merged (Fig. 1a), under
    the schedule, noise and merge rule of an E-GRPO run config, at its training resolution."""
    from . import distributed as dist
    from .config import load_config
    from .errors import ConfigError
    from .flux import FluxBackbone
    from .prompts import load_prompts
    from .rewards import build_reward, missing_options, reward_spec
    from .variance import reward_spread

    cfg = load_config(args.config)
    if cfg.method.name != "egrpo":
        raise ConfigError(f"egrpo variance --config: an E-GRPO run config, got method {cfg.method.name!r}")
    if args.limit < 1 or args.group_size < 2:
        raise ConfigError("egrpo variance: --limit must be >= 1 and --group-size >= 2")
    metric = _json_arg("--metric", args.metric)
    if not isinstance(metric, dict) or "reward" not in metric:
        raise ConfigError('egrpo variance --metric: JSON {"reward": NAME, "options": {...}}')
    reward_spec(metric["reward"], "--metric reward")
    for key in missing_options(metric["reward"], metric.get("options")):
        raise ConfigError(f"egrpo variance --metric: reward {metric['reward']!r} needs options.{key}")
    device = dist.local_device(args.device)
    m = cfg.model
    bb = FluxBackbone.from_pretrained(m.path, device=device, dtype=m.dtype, guidance=m.guidance,
                                      max_sequence_length=m.max_sequence_length, decode_batch=m.decode_batch)
    prompts = load_prompts(args.prompts, key="--prompts")[: args.limit]
    reward = build_reward(metric["reward"], metric.get("options"), device)
    df = reward_spread(bb, prompts, reward, cfg.method, group_size=args.group_size, height=m.height, width=m.width,
                       max_batch=args.max_batch or cfg.train.sample_batch, reward_batch=cfg.rewards.batch)
    _write(args.out, lambda p: df.to_csv(p, index=False))


def build_parser() -> argparse.ArgumentParser:
    from .methods import registry

    p = argparse.ArgumentParser(prog="egrpo", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("entropy", help=_entropy.__doc__)
    e.add_argument("--steps", type=int, default=16)
    e.add_argument("--shift", type=float, default=3.0)
    e.add_argument("--eta", type=float, default=0.7)
    e.add_argument("--tau", type=float, default=2.2)
    e.add_argument("--max-len", type=int, default=6)
    e.add_argument("--reading", default="entropy_power", choices=["entropy_power", "entropy_power_squared"])
    e.add_argument("--out", required=True)
    e.set_defaults(func=_entropy)

    t = sub.add_parser("train", help=_train.__doc__)
    t.add_argument("--config", required=True)
    t.add_argument("--method", choices=list(registry()), help="the method (a resolved config names its own)")
    t.add_argument("--seed", type=int, nargs="+", default=None, help="one or more seeds, trained in turn")
    t.add_argument("--out", required=True, help="run directory; may hold {seed}")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--section", default=None, help="read the run config from this top-level key of FILE")
    t.add_argument("--evaluate", metavar="PROTOCOL", help="then evaluate the final model (a protocol JSON file)")
    t.add_argument("--eval-out", help="per-image CSV of --evaluate")
    t.add_argument("--eval-images", help="image folder of --evaluate")
    t.add_argument("--on-config-change", choices=["refuse", "restart"], default="refuse",
                   help="a checkpoint of another config in --out: refuse (default) or delete it and start afresh")
    t.set_defaults(func=_train)

    w = sub.add_parser("world", help="the embedded default world").add_subparsers(dest="world_command", required=True)
    wb = w.add_parser("build", help=_world_build.__doc__)
    wb.add_argument("--out", required=True)
    wb.add_argument("--seed", type=int, default=0)
    wb.add_argument("--critic-steps", type=int, default=300)
    wb.set_defaults(func=_world_build)
    wp = w.add_parser("pretrain", help=_world_pretrain.__doc__)
    wp.add_argument("--out", required=True)
    wp.add_argument("--vae-steps", type=int, default=1200)
    wp.add_argument("--flow-steps", type=int, default=2000)
    wp.add_argument("--images", type=int, default=4000)
    wp.add_argument("--seed", type=int, default=0)
    wp.set_defaults(func=_world_pretrain)

    s = sub.add_parser("stand-ins", help=_stand_ins.__doc__)
    s.add_argument("out", help="folder to write the stand-ins and overlay.yaml into")
    s.set_defaults(func=_stand_ins)

    mem = sub.add_parser("memory", help=_memory.__doc__)
    mem.add_argument("--config", required=True)
    mem.add_argument("--method", choices=list(registry()))
    mem.add_argument("--section", default=None)
    mem.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    mem.add_argument("--gpus", type=int, default=8, help="processes (GPUs) of the training job")
    mem.add_argument("--gpu-gib", type=float, default=79.0, help="usable memory of one GPU (H100: ~79 GiB)")
    mem.set_defaults(func=_memory)

    ev = sub.add_parser("evaluate", help=_evaluate.__doc__)
    src = ev.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a Flux-format directory (the base model)")
    src.add_argument("--run", help="a training run directory (uses RUN/final)")
    ev.add_argument("--protocol", help="protocol JSON (prompts, limit, metrics, sampler, max_sequence_length) "
                    "instead of the flags below")
    ev.add_argument("--prompts")
    ev.add_argument("--limit", type=int, default=None, help="first N prompts only")
    ev.add_argument("--metrics", help='JSON: {"label": {"reward": NAME, "options": {...}}}')
    ev.add_argument("--sampler", default="{}", help="JSON of EvalSpec fields (sampler, num_steps, height, ...)")
    ev.add_argument("--max-sequence-length", type=int, default=512)
    ev.add_argument("--device", default="auto", help="auto: cuda:LOCAL_RANK when CUDA is available, else the CPU")
    ev.add_argument("--images", default=None, help="also write one PNG per prompt here")
    ev.add_argument("--out", required=True, help="per-image CSV")
    ev.set_defaults(func=_evaluate)

    rd = sub.add_parser("render", help=_render.__doc__)
    rd.add_argument("--model", required=True, help="the base model (folder `base`)")
    rd.add_argument("--run", action="append", default=[], metavar="NAME=RUN_DIR", help="a trained run (folder NAME)")
    rd.add_argument("--prompts", required=True)
    rd.add_argument("--protocol", required=True, help="the evaluation protocol JSON (its sampler and text length)")
    rd.add_argument("--device", default="auto")
    rd.add_argument("--out", required=True)
    rd.set_defaults(func=_render)

    va = sub.add_parser("variance", help=_variance.__doc__)
    va.add_argument("--config", required=True, help="an E-GRPO run config (the DAG's resolved main run)")
    va.add_argument("--prompts", required=True)
    va.add_argument("--limit", type=int, default=8)
    va.add_argument("--metric", required=True, help='JSON: {"reward": NAME, "options": {...}}')
    va.add_argument("--group-size", type=int, default=16)
    va.add_argument("--max-batch", type=int, default=None, help="rows per forward (default: train.sample_batch)")
    va.add_argument("--device", default="auto")
    va.add_argument("--out", required=True)
    va.set_defaults(func=_variance)
    return p


def main(argv: list[str] | None = None) -> int:
    from .errors import ConfigError, DeviceError, InputError, TrainingError, WeightsMissingError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ConfigError, WeightsMissingError, TrainingError, InputError, DeviceError) as e:
        print(f"egrpo: error: {e}", file=sys.stderr)  # user-facing: one clear line, no traceback
        return 2
    finally:
        if "torch" in sys.modules:
            from . import distributed as dist

            dist.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
