"""Progress a person can follow in a job log: timestamped lines through `logging` (one per training
iteration or evaluation batch, with time per step and the time left), and other libraries' progress
bars and warnings kept out of logs that are not a terminal."""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings

log = logging.getLogger("egrpo")
log.setLevel(logging.INFO)

# read by the libraries when they are imported: set before any of them is
QUIET_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
             "DIFFUSERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
THIRD_PARTY = ("transformers", "diffusers", "huggingface_hub", "datasets", "open_clip", "timm", "torch")


def setup(stream=None) -> None:
    """Timestamped `egrpo` log lines on stderr; outside a terminal also silence other libraries' progress
    bars, their log records below ERROR and their warnings (a job log keeps egrpo's lines and errors)."""
    if not log.handlers:
        handler = _Stderr() if stream is None else logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        log.addHandler(handler)
        log.propagate = False
    if not (stream or sys.stderr).isatty():
        quiet()


class _Stderr(logging.StreamHandler):
    """A handler on whatever sys.stderr is when a record is written (a test's capture, a redirect)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def quiet() -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name in ("", *THIRD_PARTY):  # "": the root logger, where open_clip writes its warnings
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", category=UserWarning, module=r"egrpo(\.|$)")  # egrpo's own warnings stay
    for module in ("transformers", "diffusers"):  # already imported: their own switches
        if module in sys.modules:
            utils = sys.modules[module].utils.logging
            utils.set_verbosity_error()
            utils.disable_progress_bar()


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """Counts steps of a known total and logs one line per step: the step, the given fields, seconds per
    step (the last one's and the mean since this process started) and the time left at the mean. With
    `lines`, a loop of many short steps reports through `reach`, about that many lines in all."""

    def __init__(self, label: str, total: int, start: int = 0, unit: str = "iteration", enabled: bool = True,
                 lines: int | None = None):
        self.label, self.total, self.done, self.unit, self.enabled = label, total, start, unit, enabled
        self.first = start
        self.every = 1 if lines is None else chunk(total, lines)
        self.t0 = self.last = time.perf_counter()

    def step(self, count: int = 1, /, **fields) -> None:
        """`count` steps done since the last call (a chunk of them: one line for many short steps)."""
        now = time.perf_counter()
        self.done += count
        if not self.enabled:
            self.last = now
            return
        mean = (now - self.t0) / (self.done - self.first)
        shown = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        log.info("%s: %s %d/%d%s %.2f s/%s (mean %.2f), ETA %s", self.label, self.unit, self.done, self.total,
                 f" {shown}" if shown else "", (now - self.last) / count, self.unit, mean,
                 duration(mean * (self.total - self.done)))
        self.last = now

    def reach(self, done: int, /, **fields) -> None:
        """`done` steps in all: a line (through `step`) where that ends a chunk of `every` steps, or the loop."""
        if done % self.every == 0 or done == self.total:
            self.step(done - self.done, **fields)


def chunk(total: int, lines: int = 20) -> int:
    """Steps per progress line so that a loop of `total` short steps logs about `lines` lines."""
    return max(1, -(-total // lines))
