"""Command line: `egrpo <command> ...` (also `python -m egrpo`).

Each command reads one spec (a run config, an evaluation protocol, the world's, Fig. 1a's or Fig. 1b's
settings: a YAML/JSON file, `--set KEY=VALUE` overrides on top), validated by the model beside the
code that uses it, and calls the library; the defaults are the models' and the library's, never
restated here (an option not given is not passed on). Every user-facing failure (a bad config or
input file, missing weights, a device that cannot be used, a run that cannot go on, a full disk) ends
in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import ConfigError
from .runs import writable_dir, writable_file


def _given(args, *names: str) -> dict:
    """The options among `names` the command line gave (argparse leaves the others out)."""
    return {name: getattr(args, name) for name in names if name in args}


def _device(args):
    from . import distributed as dist

    return dist.local_device(**{"requested": args.device} if "device" in args else {})


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


def _entropy(args) -> None:
    """Write the per-step / merged-step entropy table of a schedule as CSV (paper Fig. 1b's data)."""
    from .config import load_spec
    from .figures import EntropySpec, entropy_frame

    spec = load_spec(EntropySpec, getattr(args, "config", None), args.set, "entropy spec")
    writable_file(args.out, "--out")
    df = entropy_frame(spec)
    _write(args.out, lambda p: df.to_csv(p, index=False, float_format="%.6g"))


def _train(args) -> None:
    """Train one method, one seed after another: `egrpo train --config FILE --seed N [N ...] --out DIR`.

    FILE is a run config (its method may be named by --method) or a resolved one the DAG writes.
    Paths may hold `{seed}`; with several seeds they must. One process for several seeds pays the
    library imports once, which the default world's short runs notice.
    """
    import contextlib
    import os

    from .config import load_config, load_spec
    from .protocol import Protocol
    from .flux import check_image_size
    from .runs import RunLock

    if "evaluate" in args and "eval_out" not in args:
        raise SystemExit("egrpo train: --evaluate needs --eval-out")
    seeds = getattr(args, "seed", [None])  # None: the config's own seed
    if len(set(seeds)) < len(seeds):
        raise ConfigError(f"--seed: {next(s for k, s in enumerate(seeds) if s in seeds[:k])} twice (one run counted "
                          "as two seeds)")
    # a bad protocol, prompt set or output path fails before any training, not after the first run
    protocol = load_spec(Protocol, args.evaluate, what="evaluation protocol") if "evaluate" in args else None
    paths = {flag: getattr(args, name, None) for flag, name in
             (("--out", "out"), ("--eval-out", "eval_out"), ("--eval-images", "eval_images"))}
    shared = [flag for flag, path in paths.items() if path and "{seed}" not in path]
    if len(seeds) > 1 and shared:
        raise SystemExit(f"egrpo train: with several seeds {', '.join(shared)} must contain {{seed}}")
    configs = [load_config(args.config, getattr(args, "method", None), seed, args.set,
                           section=getattr(args, "section", None)) for seed in seeds]
    if protocol is not None and protocol.determinism != configs[0].determinism:
        raise ConfigError(f"egrpo train --evaluate: the protocol's determinism {protocol.determinism.model_dump()} "
                          f"is not the run config's {configs[0].determinism.model_dump()} (one process runs one "
                          "setting)")
    prompts = _eval_prompts(protocol) if protocol is not None else None
    runs = []
    for cfg in configs:
        out, eval_out, eval_images = (p.replace("{seed}", str(cfg.seed)) if p else p for p in paths.values())
        if protocol is not None:
            _eval_outputs(eval_out, eval_images)
            check_image_size(cfg.model.path, protocol.sampler.height, protocol.sampler.width, "sampler")
        runs.append((cfg, out, eval_out, eval_images))
    # one writer per run directory: rank 0 locks every run of the job before the first trains, so a
    # second writer of any of them stops at once, naming this process (and this job, if they are busy)
    with contextlib.ExitStack() as locks:
        if int(os.environ.get("RANK", "0")) == 0:
            for _, out, _, _ in runs:
                locks.enter_context(RunLock(out))
        for cfg, out, eval_out, eval_images in runs:
            _train_run(cfg, out, "no_progress" not in args, protocol, prompts, eval_out, eval_images,
                       _given(args, "on_config_change"))


def _train_run(cfg, out: str, progress: bool, protocol, prompts, eval_out: str | None, eval_images: str | None,
               options: dict) -> None:
    """One run, then (with a protocol) its evaluation in the same process; its models are freed on
    return, before the next seed's are loaded."""
    import gc

    from .checkpoint import load_trained
    from .evaluate import model_dtype
    from .trainer import Trainer

    trainer = Trainer(cfg, out, progress=progress, **options)
    final = trainer.train()
    if trainer.rank == 0:
        from .progress import log

        log.info("trained weights: %s", final)
    if protocol is not None:  # saves a process start per run (see eval.with_training)
        device = trainer.device
        del trainer  # the trained weights are on disk; do not hold two models at once
        gc.collect()
        backbone = load_trained(final, device=device, max_sequence_length=protocol.max_sequence_length,
                                dtype=model_dtype(protocol.sampler, device))
        _evaluate_backbone(backbone, protocol, prompts, eval_out, eval_images)


def _world_spec(args):
    from .config import load_spec
    from .world.spec import WorldSpec

    return load_spec(WorldSpec, getattr(args, "config", None), args.set, "world spec")


def _world_build(args) -> None:
    """Write the shapes world: train/test prompt sets (`datasets` on disk) and the fidelity critic."""
    from .world.build import build_world

    spec = _world_spec(args)
    _apply_determinism(spec.determinism)
    build_world(writable_dir(args.out, "--out"), spec)


def _world_pretrain(args) -> None:
    """Pretrain the world's base model (tiny FLUX architecture) into a Flux-format directory."""
    from .world.pretrain import pretrain

    spec = _world_spec(args)
    _apply_determinism(spec.determinism)
    pretrain(writable_dir(args.out, "--out"), spec)


def _world_evidence(args) -> None:
    """Base-model attribute accuracy, a grid of base samples, and each setting's seed table."""
    from .world.evidence import report

    report(**_given(args, "results", "grid"))


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

    cfg = load_config(args.config, getattr(args, "method", None), None, args.set, section=getattr(args, "section", None))
    print(plan_report(cfg, **_given(args, "gpus", "gpu_gib")))


def _apply_determinism(spec) -> None:
    """Put a job's `determinism` setting in force, before its first tensor operation."""
    from . import determinism

    determinism.apply(spec)


def _eval_prompts(protocol) -> list[str]:
    """The protocol's prompts (its first `limit`, which must not exceed them), each scorable by every
    metric: checked before any model loads."""
    from .prompts import load_prompts
    from .rewards import check_inputs, check_prompts

    prompts = load_prompts(protocol.prompts, key="protocol prompts")
    if protocol.limit is not None and protocol.limit > len(prompts):
        raise ConfigError(f"limit: {protocol.limit} prompts asked for, {protocol.prompts} holds {len(prompts)}")
    prompts = prompts[: protocol.limit]
    check_prompts([m.reward for m in protocol.metrics.values()], prompts, f"protocol prompts ({protocol.prompts})")
    for m in protocol.metrics.values():
        check_inputs([m.reward], lambda _: m.options)
    return prompts


def _eval_outputs(out: str, images: str | None) -> None:
    """The evaluation's CSV (and image folder) can be written: checked before any model loads."""
    writable_file(out, "--out")
    if images:
        writable_dir(images, "--images", create=False)  # a directory() output of the DAG: made when written


def _evaluate_backbone(backbone, protocol, prompts: list[str], out: str, images: str | None) -> None:
    """Sample and score the protocol's prompts (sharded over ranks), write the per-image CSV and,
    on rank 0, its per-metric summary beside it."""
    from . import distributed as dist
    from .evaluate import evaluate, summarise
    from .rewards import build_reward

    rank, world = dist.init_from_env(backbone.device)
    metrics = {label: build_reward(m.reward, {**m.options, "precision": protocol.precision}, backbone.device)
               for label, m in protocol.metrics.items()}
    df = evaluate(backbone, prompts, metrics, protocol.sampler, rank=rank, world=world, image_dir=images,
                  score_text=protocol.score_text)
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
        import json

        from .determinism import record

        weights = getattr(backbone, "weights_id", "base")
        summarise(df, list(metrics), weights).to_csv(out.with_suffix(".summary.csv"), index=False)
        out.with_suffix(".provenance.json").write_text(json.dumps(
            {"weights": weights, "determinism": protocol.determinism.model_dump(), **record(backbone.device)}, indent=2))


def _check_model(model: str | None, run: str | None, sampler) -> None:
    """Before anything loads: a run's export checked by content (its weights file and its base model
    are the ones it recorded), and the sampler's image size one the model can make."""
    from .checkpoint import check_export
    from .flux import check_image_size

    base = check_export(Path(run) / "final")[1] if run is not None else model
    check_image_size(base, sampler.height, sampler.width, "sampler")


def _load_model(model: str | None, run: str | None, protocol, device):
    """The base model (a Flux-format directory) or a training run's final weights on top of it, in the
    protocol's sampling dtype."""
    from .checkpoint import load_trained
    from .evaluate import model_dtype
    from .flux import FluxBackbone

    msl, dtype = protocol.max_sequence_length, model_dtype(protocol.sampler, device)
    if run is not None:
        return load_trained(Path(run) / "final", device=device, max_sequence_length=msl, dtype=dtype)
    return FluxBackbone.from_pretrained(model, device=device, max_sequence_length=msl, dtype=dtype)


def _evaluate(args) -> None:
    """Sample the test prompts with per-prompt seeds and score every metric (per-image CSV)."""
    from .config import load_spec
    from .protocol import Protocol

    protocol = load_spec(Protocol, getattr(args, "protocol", None), args.set, "evaluation protocol")
    _apply_determinism(protocol.determinism)
    prompts = _eval_prompts(protocol)
    _eval_outputs(args.out, getattr(args, "images", None))
    _check_model(getattr(args, "model", None), getattr(args, "run", None), protocol.sampler)
    backbone = _load_model(getattr(args, "model", None), getattr(args, "run", None), protocol, _device(args))
    _evaluate_backbone(backbone, protocol, prompts, args.out, getattr(args, "images", None))


def _render(args) -> None:
    """The same prompts and seeds through several models, one image folder each (Figs. 5-7)."""
    import gc

    from . import progress
    from .config import load_spec
    from .evaluate import generate, save_images
    from .protocol import Protocol
    from .prompts import load_prompts

    protocol = load_spec(Protocol, args.protocol, what="evaluation protocol")
    _apply_determinism(protocol.determinism)
    prompts = load_prompts(args.prompts, key="--prompts")
    bad = [r for r in args.run if "=" not in r]
    if bad:
        raise SystemExit(f"egrpo render: --run takes NAME=RUN_DIR, got {bad[0]!r}")
    models = [("base", None)] + [tuple(r.split("=", 1)) for r in args.run]
    for name, run in models:
        _check_model(args.model, run, protocol.sampler)
        writable_dir(Path(args.out) / name, "--out", create=False)  # made when written (a directory() output)
    device = _device(args)
    # a timestamped line per batch of prompts, the ETA over every model's
    bar = progress.Progress("render", len(models) * -(-len(prompts) // protocol.sampler.batch), unit="batch")
    for k, (name, run) in enumerate(models):
        progress.log.info("render: model %d/%d, %s", k + 1, len(models), name)
        backbone = _load_model(args.model, run, protocol, device)
        images = generate(backbone, prompts, range(len(prompts)), protocol.sampler, progress=bar)
        save_images(images, [f"{k:05d}.png" for k in range(len(prompts))], Path(args.out) / name)
        del backbone  # one model on the device at a time
        gc.collect()


def _variance(args) -> None:
    """Reward std over G branches of a one-step SDE at each step, unmerged and merged (Fig. 1a), under
    the schedule, noise and merge rule of an E-GRPO run config, at its training resolution."""
    from .config import load_spec
    from .flux import FluxBackbone, check_image_size
    from .prompts import load_prompts
    from .rewards import build_reward, check_inputs, check_prompts
    from .protocol import VarianceSpec
    from .variance import reward_spread

    spec = load_spec(VarianceSpec, getattr(args, "config", None), args.set, "variance spec")
    _apply_determinism(spec.run.determinism)
    cfg, m = spec.run, spec.run.model
    prompts = load_prompts(spec.prompts, key="variance prompts")
    if spec.limit > len(prompts):
        raise ConfigError(f"limit: {spec.limit} prompts asked for, {spec.prompts} holds {len(prompts)}")
    prompts = prompts[: spec.limit]
    check_prompts([spec.metric.reward], prompts, f"variance prompts ({spec.prompts})")
    check_inputs([spec.metric.reward], lambda _: spec.metric.options)
    check_image_size(m.path, m.height, m.width, "run.model")
    writable_file(args.out, "--out")
    device = _device(args)
    bb = FluxBackbone.from_pretrained(m.path, device=device, dtype=m.dtype, guidance=m.guidance,
                                      max_sequence_length=m.max_sequence_length, decode_batch=m.decode_batch)
    reward = build_reward(spec.metric.reward, spec.metric.options, device)
    df = reward_spread(bb, prompts, reward, cfg.method, group_size=spec.group_size, height=m.height, width=m.width,
                       max_batch=spec.max_batch or cfg.train.sample_batch, reward_batch=cfg.rewards.batch)
    _write(args.out, lambda p: df.to_csv(p, index=False))


def _compare(args) -> int:
    """Two results folders side by side: each table cell and claim identical, within or beyond the
    intervals, and the provenance fields that differ (egrpo.compare)."""
    from .compare import IDENTICAL, PRINTED, RANK, WITHIN, compare_folders

    result = compare_folders(args.a, args.b)
    print(result.report(), end="")
    if "out" in args:
        _write(args.out, lambda p: result.frame().to_csv(p, index=False))
    required = {"identical": IDENTICAL, "printed": PRINTED, "within": WITHIN}.get(getattr(args, "require", None))
    if required and RANK[result.overall] > RANK[required]:
        print(f"egrpo compare: {result.overall}, worse than required ({required})", file=sys.stderr)
        return 1
    return 0


def _power(args) -> None:
    """For every paired claim of a finished run's tables, the training seeds its bar needs, projected
    from the variance it measured (docs/statistics.md)."""
    from .power import load_tables, power_table

    print(power_table(load_tables(args.configfile, **_given(args, "workdir")),
                      **_given(args, "ratio", "fraction", "prompts")))


def _schema(args) -> None:
    """Write the Snakemake config's JSON schema and config/README.md's key tables from the models
    (--check: fail when either is stale instead)."""
    from .schema import stale, write

    if "check" in args:
        old = stale(**_given(args, "root"))
        if old:
            raise SystemExit(f"egrpo schema: stale: {', '.join(map(str, old))} (run `egrpo schema` and commit them)")
    else:
        for path in write(**_given(args, "root")):
            print(f"wrote {path}")


def build_parser() -> argparse.ArgumentParser:
    from .methods import registry

    p = argparse.ArgumentParser(prog="egrpo", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def command(parent, name: str, func, spec: str | None = None, required: bool = False) -> argparse.ArgumentParser:
        """A subcommand; options it is not given stay out of its namespace (their defaults are the
        library's). With `spec`, it reads a spec file (`--config`) and `--set` overrides."""
        c = parent.add_parser(name, help=func.__doc__.splitlines()[0], argument_default=argparse.SUPPRESS)
        c.set_defaults(func=func)
        if spec:
            c.add_argument("--config", required=required, help=spec)
            c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key of it")
        return c

    e = command(sub, "entropy", _entropy, "E-GRPO's schedule as `method.*` keys, and `max_len` (optional)")
    e.add_argument("--out", required=True)

    t = command(sub, "train", _train, "a run config, or a resolved one the DAG writes", required=True)
    t.add_argument("--method", choices=list(registry()), help="the method (a resolved config names its own)")
    t.add_argument("--seed", type=int, nargs="+", help="one or more seeds, trained in turn (default: the config's)")
    t.add_argument("--out", required=True, help="run directory; may hold {seed}")
    t.add_argument("--no-progress", action="store_true", help="no line per iteration")
    t.add_argument("--section", help="read the run config from this top-level key of FILE")
    t.add_argument("--evaluate", metavar="PROTOCOL", help="then evaluate the final model (a protocol file)")
    t.add_argument("--eval-out", help="per-image CSV of --evaluate")
    t.add_argument("--eval-images", help="image folder of --evaluate")
    t.add_argument("--on-config-change", choices=["refuse", "restart"],
                   help="what a checkpoint of another config in --out gets: refuse (an error) or restart (deleted, "
                   "the run started afresh)")

    w = sub.add_parser("world", help="the embedded default world").add_subparsers(dest="world_command", required=True)
    for name, func in (("build", _world_build), ("pretrain", _world_pretrain)):
        command(w, name, func, "the world's settings (results/configs/world/<hash>.json; optional)").add_argument(
            "--out", required=True)
    wv = command(w, "evidence", _world_evidence)
    wv.add_argument("results", nargs="?", type=Path, help="the DAG's results folder")
    wv.add_argument("--grid", type=Path, help="also save a grid of the base model's test images here")

    s = command(sub, "stand-ins", _stand_ins)
    s.add_argument("out", help="folder to write the stand-ins and overlay.yaml into")

    mem = command(sub, "memory", _memory, "a run config", required=True)
    mem.add_argument("--method", choices=list(registry()))
    mem.add_argument("--section")
    mem.add_argument("--gpus", type=int, help="processes (GPUs) of the training job")
    mem.add_argument("--gpu-gib", type=float, help="usable memory of one GPU (it also decides whether sampling keeps "
                     "the whole model gathered)")

    ev = command(sub, "evaluate", _evaluate)
    src = ev.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a Flux-format directory (the base model)")
    src.add_argument("--run", help="a training run directory (uses RUN/final)")
    ev.add_argument("--protocol", help="evaluation protocol (prompts, limit, metrics, sampler, max_sequence_length)")
    ev.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a protocol key")
    ev.add_argument("--device", help="a torch device, or auto: cuda:LOCAL_RANK when CUDA is available, else the CPU")
    ev.add_argument("--images", help="also write one PNG per prompt here")
    ev.add_argument("--out", required=True, help="per-image CSV")

    rd = command(sub, "render", _render)
    rd.add_argument("--model", required=True, help="the base model (folder `base`)")
    rd.add_argument("--run", action="append", default=[], metavar="NAME=RUN_DIR", help="a trained run (folder NAME)")
    rd.add_argument("--prompts", required=True)
    rd.add_argument("--protocol", required=True, help="the evaluation protocol (its sampler and text length)")
    rd.add_argument("--device")
    rd.add_argument("--out", required=True)

    va = command(sub, "variance", _variance, "Fig. 1a's spec (results/configs/variance/<hash>.json)")
    va.add_argument("--device")
    va.add_argument("--out", required=True)

    cmp = command(sub, "compare", _compare)
    cmp.add_argument("a", help="a results folder (or the checkout holding results/)")
    cmp.add_argument("b", help="the results folder to compare it with")
    cmp.add_argument("--out", help="also write every comparison as CSV rows (section, item, a, b, status)")
    cmp.add_argument("--require", choices=["identical", "printed", "within"],
                     help="exit with status 1 when the folders compare worse than this: identical, identical as "
                     "printed, or within the intervals")

    pw = command(sub, "power", _power)
    pw.add_argument("--configfile", nargs="+", required=True, help="the configs the run used, in order")
    pw.add_argument("--workdir", type=Path, help="where its results/ are (unless given: the working directory)")
    pw.add_argument("--ratio", type=float, help="a gain's bar: this many half-widths")
    pw.add_argument("--fraction", type=float, help="a difference's bound: this fraction of the mean gain")
    pw.add_argument("--prompts", type=int, nargs="*",
                    help="also project onto these test-set sizes (a larger test set drawn like the measured one)")

    sc = command(sub, "schema", _schema)
    sc.add_argument("--check", action="store_true", help="fail when a generated file is stale, write nothing")
    sc.add_argument("--root", type=Path, help="the repository (unless given: the working directory)")
    return p


def main(argv: list[str] | None = None) -> int:
    from . import progress
    from .errors import ConfigError, DeviceError, InputError, NonFiniteRewardError, TrainingError, WeightsMissingError
    from .runs import die_with_launcher

    progress.setup()  # before any library import: timestamped lines; other libraries quiet in a log file
    die_with_launcher()  # a rank torchrun started ends with torchrun, however torchrun ends
    args = build_parser().parse_args(argv)
    try:
        if args.func(args):  # a command that judges (compare --require) returns its exit status
            _leave_group()
            return 1
    except (ConfigError, WeightsMissingError, TrainingError, InputError, DeviceError, NonFiniteRewardError) as e:
        print(f"egrpo: error: {e}", file=sys.stderr)  # user-facing: one clear line, no traceback
        _leave_group(failed=2)
        return 2
    except BaseException:
        _leave_group(failed=1, traceback=True)
        raise
    _leave_group()
    return 0


def _leave_group(failed: int = 0, traceback: bool = False) -> None:
    """A clean exit leaves the process group; a failing process of a group exits at once instead,
    so that a rank which failed alone cannot hang in the group's teardown (distributed.hard_exit)."""
    if "torch" not in sys.modules:
        return
    from . import distributed as dist

    if not failed:
        dist.destroy()
    elif dist.is_distributed():
        if traceback:
            import traceback as tb

            tb.print_exc()
        dist.hard_exit(failed)


if __name__ == "__main__":
    sys.exit(main())
