"""Command line: `egrpo <command> ...` (also `python -m egrpo`)."""

from __future__ import annotations

import argparse
import sys


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
    """Train one method with one seed: `egrpo train --config FILE --method M --seed N --out DIR`."""
    from .config import load_config
    from .trainer import Trainer

    cfg = load_config(args.config, args.method, args.seed, args.set)
    trainer = Trainer(cfg, args.out, progress=not args.no_progress)
    final = trainer.train()
    if trainer.rank == 0:
        print(f"trained weights: {final}")


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
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--out", required=True)
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_train)
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
