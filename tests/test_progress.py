"""Job logs a person can follow: one timestamped line per training iteration, evaluation or rendering
batch, variance prompt and chunk of pretraining steps, with the time per step and the time left, and no
other library's progress bars or warnings in a log file."""

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


def _job_log(tmp_path, *args: str) -> str:
    """`egrpo ARGS` as a rule runs it (stdout and stderr into a file): the log's text, the run succeeded,
    and no other library's progress bars or warnings are in it."""
    log = tmp_path / "job.log"
    with open(log, "w") as f:
        r = subprocess.run([sys.executable, "-m", "egrpo", *args], stdout=f, stderr=subprocess.STDOUT, timeout=300)
    text = log.read_text()
    assert r.returncode == 0, text[-3000:]
    assert "\r" not in text and not re.search(r"warn", text, re.I), text[-3000:]  # no bars, no warnings
    return text


def _has_line(text: str, pattern: str) -> None:
    """A timestamped progress line: `pattern`, then seconds per unit, their mean and the time left."""
    assert re.search(rf"^{STAMP} {pattern} [\d.]+ s/\w+ \(mean [\d.]+\), ETA \d+:\d\d:\d\d$", text, re.M), \
        (pattern, text[-3000:])


def _eval_protocol(tmp_path):
    (tmp_path / "p.txt").write_text("a red circle\na blue square\na cat\n")
    protocol = tmp_path / "eval.json"
    protocol.write_text(json.dumps({"prompts": str(tmp_path / "p.txt"), "metrics": {"hps": {"reward": "brightness"}},
                                    "sampler": {"num_steps": 3, "height": 64, "width": 64, "batch": 2},
                                    "max_sequence_length": 16}))
    return protocol


def test_a_job_log_shows_each_iteration_and_evaluation_batch_with_timestamps(tiny_flux_dir, tmp_path):
    """`egrpo train --evaluate` as the train rule runs it."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_run_config(tiny_flux_dir, "dancegrpo", train={"iterations": 3})))
    protocol = _eval_protocol(tmp_path)
    text = _job_log(tmp_path, "train", "--config", str(cfg), "--method", "dancegrpo", "--out", str(tmp_path / "o"),
                    "--evaluate", str(protocol), "--eval-out", str(tmp_path / "e.csv"))
    for it in (1, 2, 3):
        _has_line(text, rf"dancegrpo seed \d+: iteration {it}/3 reward/\S+ -?[\d.e-]+ loss \S+")
    for batch in (1, 2):
        _has_line(text, f"evaluation: batch {batch}/2")
    assert re.search(rf"^{STAMP} trained weights: \S+final$", text, re.M), text[-3000:]  # a log line, not a print


def test_the_rendering_job_logs_each_batch_of_each_model(tiny_flux_dir, tmp_path):
    """`egrpo render` (Figs. 5-7's images): a line per model and per batch, the ETA over all models."""
    protocol = _eval_protocol(tmp_path)
    text = _job_log(tmp_path, "render", "--model", str(tiny_flux_dir), "--prompts", str(tmp_path / "p.txt"),
                    "--protocol", str(protocol), "--out", str(tmp_path / "q"))
    assert re.search(rf"^{STAMP} render: model 1/1, base$", text, re.M), text[-3000:]
    for batch in (1, 2):
        _has_line(text, f"render: batch {batch}/2")


def test_the_variance_job_logs_each_prompt_of_each_pass(tiny_flux_dir, tmp_path):
    """`egrpo variance` (Fig. 1a): a line per prompt, unmerged then merged branches."""
    (tmp_path / "p.txt").write_text("a red circle\na blue square\n")
    run = tiny_run_config(tiny_flux_dir, "egrpo")
    run["method"]["name"] = "egrpo"
    spec = tmp_path / "variance.json"
    spec.write_text(json.dumps({"run": run, "prompts": str(tmp_path / "p.txt"), "metric": {"reward": "brightness"},
                                "limit": 2, "group_size": 2}))
    text = _job_log(tmp_path, "variance", "--config", str(spec), "--out", str(tmp_path / "v.csv"))
    for k, branches in enumerate(["unmerged"] * 2 + ["merged"] * 2):
        _has_line(text, f"variance: prompt {k + 1}/4 branches {branches}")


def test_the_world_pretrain_job_logs_chunks_of_steps(tmp_path):
    """`egrpo world pretrain`: a line per chunk of steps (one step each here) of each phase."""
    text = _job_log(tmp_path, "world", "pretrain", "--set", "pretrain.vae_steps=3", "--set", "pretrain.flow_steps=2",
                    "--set", "pretrain.images=16", "--out", str(tmp_path / "base"))
    for phase, steps in (("vae", 3), ("transformer", 2)):
        for k in range(1, steps + 1):
            _has_line(text, rf"world pretrain, {phase}: step {k}/{steps} loss [\d.e-]+")
    assert re.search(rf"^{STAMP} transformer: 2 steps, final flow loss", text, re.M), text[-3000:]


def test_the_world_build_job_logs_the_critics_training(tmp_path):
    """`egrpo world build`: a line per chunk of the fidelity critic's training steps."""
    text = _job_log(tmp_path, "world", "build", "--set", "critic_steps=2", "--out", str(tmp_path / "world"))
    for k in (1, 2):
        _has_line(text, rf"world build, fidelity critic: step {k}/2 loss [\d.e-]+")


def test_a_chunk_of_steps_is_one_line_with_the_time_per_step(monkeypatch):
    clock = iter([0.0, 10.0])  # start, then 5 steps in one chunk: 2 s a step
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    records = []
    monkeypatch.setattr(progress.log, "info", lambda fmt, *a: records.append(fmt % a))
    progress.Progress("pretrain", total=20, unit="step").step(5, loss=0.5)
    assert records == ["pretrain: step 5/20 loss 0.5 2.00 s/step (mean 2.00), ETA 0:00:30"]
    assert progress.chunk(1000) == 50 and progress.chunk(7) == 1 and progress.chunk(21) == 2


def test_a_loop_of_short_steps_logs_a_line_per_chunk_and_at_its_end(monkeypatch):
    records = []
    monkeypatch.setattr(progress.log, "info", lambda fmt, *a: records.append(fmt % a))
    bar = progress.Progress("critic", total=45, unit="step", lines=20)  # 3 steps a line
    for k in range(45):
        bar.reach(k + 1)
    assert [int(r.split()[2].split("/")[0]) for r in records] == list(range(3, 46, 3))
    records.clear()
    bar = progress.Progress("critic", total=7, unit="step", lines=3)  # 3 steps a line, and the last
    for k in range(7):
        bar.reach(k + 1)
    assert [r.split()[2] for r in records] == ["3/7", "6/7", "7/7"]
