"""Failures a retry would only repeat, recorded in the run directory so that the retry fails at once.

A diverged run (a non-finite reward, loss, gradient or weight) is deterministic from its last
checkpoint: every random draw is seeded by (run, iteration, slot, ...), so a retry replays the same
iterations into the same failure, hours of 8 GPUs each time (the cluster profile retries a job
twice). A config error is deterministic too. Such a failure is written to `<run>/failed.json` with
the config and process count it happened under; the next start of the same run, same config and
process count, stops before any model loads with the recorded message. Deleting the file clears
it; a run started with another config removes a record that no longer applies.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from .config import Config, resume_conflicts
from .errors import ConfigError, InputError, TrainingError

FILE = "failed.json"
KINDS = {"TrainingError": TrainingError, "ConfigError": ConfigError}  # failures a retry would repeat


def path(out: str | Path) -> Path:
    return Path(out) / FILE


def check(out: str | Path, cfg: Config, world: int, rank: int = 0) -> None:
    """Raise the recorded failure of this run (same config, same process count); remove a record of
    another config."""
    p = path(out)
    if not p.is_file():
        return
    try:
        rec = json.loads(p.read_text())
        kind, message, config = KINDS[rec["kind"]], rec["error"], rec["config"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{p} is not a failure record ({e}); delete it to start the run") from None
    if resume_conflicts(config, cfg.to_dict()) or rec.get("world") != world:
        if rank == 0:
            p.unlink(missing_ok=True)
        return
    raise kind(f"{message} [recorded in {p} at {rec.get('time', '?')}: this run fails the same way again; "
               f"delete {p} to try anyway]")


def record(out: str | Path, cfg: Config, world: int, error: BaseException, iteration: int | None = None) -> Path:
    """Write the failure record (rank 0's job; written whole, then renamed into place)."""
    p = path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    rec = {"kind": type(error).__name__, "error": str(error), "iteration": iteration, "world": world,
           "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config_hash": cfg.digest(), "config": cfg.to_dict()}
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec, indent=1))
    tmp.replace(p)
    return p


@contextlib.contextmanager
def recorded(out: str | Path, cfg: Config, world: int, rank: int, iteration=lambda: None):
    """Record a failure a retry would repeat (KINDS) raised inside, then let it propagate."""
    try:
        yield
    except tuple(KINDS.values()) as e:
        if rank == 0:
            record(out, cfg, world, e, iteration())
        raise
