"""Command line: `egrpo <command> ...` (also `python -m egrpo`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _entropy(args) -> None:
    """Write the per-step / merged-step entropy table of a schedule as CSV (paper Fig. 1b's data)."""
    import pandas as pd

    from .merge import entropy_table, merge_lengths
    from .schedule import shifted_sigmas

    sigmas = shifted_sigmas(args.steps, args.shift)
    table = entropy_table(sigmas, args.max_len, eta=args.eta, reading=args.reading)
    df = pd.DataFrame(table.numpy(), columns=[f"l={l}" for l in range(1, args.max_len + 1)])
    df.insert(0, "sigma", sigmas[:-1].numpy())
    df.insert(0, "step", range(args.steps))
    df["adaptive_l"] = merge_lengths(sigmas, range(args.steps), tau=args.tau, eta=args.eta, reading=args.reading)
    df.to_csv(args.out, index=False, float_format="%.6g")


def _train(args) -> None:
    """Train one method, one seed after another: `egrpo train --config FILE --method M --seed N [N ...] --out DIR`.

    Paths may hold `{seed}`; with several seeds they must. One process for several seeds pays the
    library imports (~9 s on CPU) once, which the default world's short runs notice.
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
    for seed in seeds:
        cfg = load_config(args.config, args.method, seed, args.set, section=args.section)
        out, eval_out, eval_images = (p.replace("{seed}", str(cfg.seed)) if p else p for p in paths.values())
        _train_run(cfg, out, not args.no_progress, protocol, eval_out, eval_images)


def _train_run(cfg, out: str, progress: bool, protocol: dict | None, eval_out: str | None,
               eval_images: str | None) -> None:
    """One run, then (with a protocol) its evaluation in the same process; its models are freed on
    return, before the next seed's are loaded."""
    from .checkpoint import load_trained
    from .trainer import Trainer

    trainer = Trainer(cfg, out, progress=progress)
    final = trainer.train()
    if trainer.rank == 0:
        print(f"trained weights: {final}", flush=True)
    if protocol is not None:  # saves a process start per run (see eval.with_training)
        device = trainer.device
        del trainer  # the trained weights are on disk; do not hold two models at once
        backbone = load_trained(final, device=device, max_sequence_length=protocol["max_sequence_length"])
        _evaluate_backbone(backbone, protocol, eval_out, eval_images)


def _world_build(args) -> None:
    """Write the shapes world: train/test prompt sets (`datasets` on disk) and the fidelity critic."""
    from .world.build import build_world

    build_world(args.out, seed=args.seed, critic_steps=args.critic_steps)


def _world_pretrain(args) -> None:
    """Pretrain the world's base model (tiny FLUX architecture) into a Flux-format directory."""
    from .world.pretrain import PretrainConfig, pretrain

    pretrain(args.out, PretrainConfig(vae_steps=args.vae_steps, flow_steps=args.flow_steps, seed=args.seed,
                                      n_images=args.images))


PROTOCOL_KEYS = ("prompts", "limit", "metrics", "sampler", "max_sequence_length")


def _read_protocol(path: str) -> dict:
    """An evaluation protocol file (JSON with PROTOCOL_KEYS; the DAG writes results/configs/eval.json)."""
    import json as _json

    from .errors import ConfigError

    try:
        protocol = _json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"evaluation protocol {path} does not exist") from None
    missing = {"prompts", "metrics"} - set(protocol)
    unknown = set(protocol) - set(PROTOCOL_KEYS)
    if missing or unknown:
        raise ConfigError(f"evaluation protocol {path}: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
    return {"limit": None, "sampler": {}, "max_sequence_length": 512, **protocol}


def _evaluate_backbone(backbone, protocol: dict, out: str, images: str | None) -> None:
    """Sample and score the protocol's prompts (sharded over ranks), write the per-image CSV and,
    on rank 0, its per-metric summary beside it."""
    from . import distributed as dist
    from .evaluate import EvalSpec, evaluate, summarise
    from .prompts import load_prompts
    from .rewards import build_reward

    rank, world = dist.init_from_env(backbone.device)
    prompts = load_prompts(protocol["prompts"])[: protocol["limit"] or None]
    metrics = {label: build_reward(m["reward"], m.get("options"), backbone.device)
               for label, m in protocol["metrics"].items()}
    df = evaluate(backbone, prompts, metrics, EvalSpec(**protocol["sampler"]), rank=rank, world=world,
                  image_dir=images)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out if world == 1 else out.with_suffix(f".rank{rank}.csv")
    df.to_csv(part, index=False)
    if world > 1:
        dist.barrier()
        if rank == 0:
            import pandas as pd

            parts = [out.with_suffix(f".rank{r}.csv") for r in range(world)]
            df = pd.concat(map(pd.read_csv, parts)).sort_values("prompt_index")
            df.to_csv(out, index=False)
            for p in parts:
                p.unlink()
    if rank == 0 and metrics:
        summarise(df, list(metrics)).to_csv(out.with_suffix(".summary.csv"), index=False)


def _load_model(model: str | None, run: str | None, msl: int, device="cpu"):
    """The base model (a Flux-format directory) or a training run's final weights on top of it."""
    from .checkpoint import load_trained
    from .flux import FluxBackbone

    if run is not None:
        return load_trained(Path(run) / "final", device=device, max_sequence_length=msl)
    return FluxBackbone.from_pretrained(model, device=device, max_sequence_length=msl)


def _evaluate(args) -> None:
    """Sample the test prompts with per-prompt seeds and score every metric (per-image CSV)."""
    import json as _json

    from . import distributed as dist

    if args.protocol:
        protocol = _read_protocol(args.protocol)
    elif args.prompts and args.metrics is not None:
        protocol = {"prompts": args.prompts, "limit": args.limit, "metrics": _json.loads(args.metrics),
                    "sampler": _json.loads(args.sampler), "max_sequence_length": args.max_sequence_length}
    else:
        raise SystemExit("egrpo evaluate: give --protocol FILE, or --prompts and --metrics")
    backbone = _load_model(args.model, args.run, protocol["max_sequence_length"], dist.local_device(args.device))
    _evaluate_backbone(backbone, protocol, args.out, args.images)


def _render(args) -> None:
    """The same prompts and seeds through several models, one image folder each (Figs. 5-7)."""
    from .evaluate import EvalSpec, generate, save_images
    from .prompts import load_prompts

    protocol = _read_protocol(args.protocol)
    prompts = load_prompts(args.prompts)
    spec = EvalSpec(**protocol["sampler"])
    bad = [r for r in args.run if "=" not in r]
    if bad:
        raise SystemExit(f"egrpo render: --run takes NAME=RUN_DIR, got {bad[0]!r}")
    sources = [("base", None)] + [tuple(r.split("=", 1)) for r in args.run]
    for name, run in sources:
        backbone = _load_model(args.model, run, protocol["max_sequence_length"])
        images = generate(backbone, prompts, range(len(prompts)), spec)
        save_images(images, [f"{k:05d}.png" for k in range(len(prompts))], Path(args.out) / name)


def _variance(args) -> None:
    """Reward std over G branches of a one-step SDE at each step, unmerged and merged (Fig. 1a)."""
    import json as _json

    from .flux import FluxBackbone
    from .prompts import load_prompts
    from .rewards import build_reward
    from .variance import reward_spread

    metric = _json.loads(args.metric)
    bb = FluxBackbone.from_pretrained(args.model, max_sequence_length=args.max_sequence_length)
    prompts = load_prompts(args.prompts)[: args.limit]
    df = reward_spread(bb, prompts, build_reward(metric["reward"], metric.get("options")), num_steps=args.steps,
                       tau=args.tau, group_size=args.group_size, height=args.height, width=args.width)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="egrpo", description=__doc__)
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

    from .config import METHODS

    t = sub.add_parser("train", help=_train.__doc__)
    t.add_argument("--config", required=True)
    t.add_argument("--method", required=True, choices=METHODS)
    t.add_argument("--seed", type=int, nargs="+", default=None, help="one or more seeds, trained in turn")
    t.add_argument("--out", required=True, help="run directory; may hold {seed}")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--section", default=None, help="read the run config from this top-level key of FILE")
    t.add_argument("--evaluate", metavar="PROTOCOL", help="then evaluate the final model (a protocol JSON file)")
    t.add_argument("--eval-out", help="per-image CSV of --evaluate")
    t.add_argument("--eval-images", help="image folder of --evaluate")
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
    ev.add_argument("--device", default="auto")
    ev.add_argument("--images", default=None, help="also write one PNG per prompt here")
    ev.add_argument("--out", required=True, help="per-image CSV")
    ev.set_defaults(func=_evaluate)

    rd = sub.add_parser("render", help=_render.__doc__)
    rd.add_argument("--model", required=True, help="the base model (folder `base`)")
    rd.add_argument("--run", action="append", default=[], metavar="NAME=RUN_DIR", help="a trained run (folder NAME)")
    rd.add_argument("--prompts", required=True)
    rd.add_argument("--protocol", required=True, help="the evaluation protocol JSON (its sampler and text length)")
    rd.add_argument("--out", required=True)
    rd.set_defaults(func=_render)

    va = sub.add_parser("variance", help=_variance.__doc__)
    va.add_argument("--model", required=True)
    va.add_argument("--prompts", required=True)
    va.add_argument("--limit", type=int, default=8)
    va.add_argument("--metric", required=True, help='JSON: {"reward": NAME, "options": {...}}')
    va.add_argument("--steps", type=int, default=16)
    va.add_argument("--tau", type=float, default=2.2)
    va.add_argument("--group-size", type=int, default=16)
    va.add_argument("--height", type=int, default=32)
    va.add_argument("--width", type=int, default=32)
    va.add_argument("--max-sequence-length", type=int, default=512)
    va.add_argument("--out", required=True)
    va.set_defaults(func=_variance)
    return p


def main(argv: list[str] | None = None) -> int:
    from .errors import ConfigError, TrainingError, WeightsMissingError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ConfigError, WeightsMissingError, TrainingError) as e:  # user-facing: one clear line, no traceback
        print(f"egrpo: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
