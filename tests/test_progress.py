"""Job logs a person can follow: one timestamped line per training iteration and evaluation batch, with
the time per step and the time left, and no other library's progress bars or warnings in a log file."""

import io
import json
import logging
import re
import subprocess
import sys

import yaml

from conftest import tiny_run_config
from egrpo import progress

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


def test_a_progress_line_per_step_with_time_and_eta(monkeypatch):
    clock = iter([100.0, 102.0, 106.0])  # start, then two steps: 2 s and 4 s
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    progress.log.addHandler(handler)
    try:
        bar = progress.Progress("egrpo seed 0", total=3601, start=0)
        bar.step(reward=0.73456, loss=-0.5)
        bar.step(reward=0.75, loss=0.25)
    finally:
        progress.log.removeHandler(handler)
    lines = buf.getvalue().splitlines()
    assert re.fullmatch(rf"{STAMP} egrpo seed 0: iteration 1/3601 reward 0.7346 loss -0.5 2.00 s/iteration "
                        r"\(mean 2.00\), ETA 2:00:00", lines[0]), lines[0]
    assert lines[1].endswith("iteration 2/3601 reward 0.75 loss 0.25 4.00 s/iteration (mean 3.00), ETA 2:59:57")


def test_a_job_log_shows_each_iteration_and_evaluation_batch_with_timestamps(tiny_flux_dir, tmp_path):
    """`egrpo train --evaluate` as the train rule runs it (stdout and stderr into a file)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_run_config(tiny_flux_dir, "dancegrpo", train={"iterations": 3})))
    (tmp_path / "p.txt").write_text("a red circle\na blue square\na cat\n")
    protocol = tmp_path / "eval.json"
    protocol.write_text(json.dumps({"prompts": str(tmp_path / "p.txt"), "metrics": {"hps": {"reward": "brightness"}},
                                    "sampler": {"num_steps": 3, "height": 64, "width": 64, "batch": 2},
                                    "max_sequence_length": 16}))
    log = tmp_path / "job.log"
    with open(log, "w") as f:
        r = subprocess.run([sys.executable, "-m", "egrpo", "train", "--config", str(cfg), "--method", "dancegrpo",
                            "--out", str(tmp_path / "o"), "--evaluate", str(protocol), "--eval-out",
                            str(tmp_path / "e.csv")], stdout=f, stderr=subprocess.STDOUT, timeout=300)
    text = log.read_text()
    assert r.returncode == 0, text[-3000:]
    for it in (1, 2, 3):
        assert re.search(rf"^{STAMP} dancegrpo seed \d+: iteration {it}/3 reward/\S+ -?[\d.e-]+ loss \S+ "
                         rf"[\d.]+ s/iteration \(mean [\d.]+\), ETA \d+:\d\d:\d\d$", text, re.M), text[-3000:]
    for batch in (1, 2):
        assert re.search(rf"^{STAMP} evaluation: batch {batch}/2 [\d.]+ s/batch", text, re.M), text[-3000:]
    assert "\r" not in text and not re.search(r"warn", text, re.I), text[-3000:]  # no bars, no warnings
