"""One writer per run directory (egrpo.runs): a second `egrpo train` on a run directory stops at once
naming the first, a killed writer leaves no lock behind, and the ranks of a torchrun job die with
their launcher. Real processes on the CPU."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import tiny_run_config
from egrpo.errors import InputError
from egrpo.runs import LOCK, RunLock

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _config(tmp_path, tiny_flux_dir, iterations):
    raw = tiny_run_config(tiny_flux_dir, "dancegrpo", train={"iterations": iterations, "checkpoint_every": 1000})
    raw["method"]["name"] = "dancegrpo"
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _wait_for(predicate, what, timeout=240, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended ({proc.returncode}) before {what}:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _alive(pid: int) -> bool:
    """A live process (a zombie, dead but not yet reaped, counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _lock_free(run: Path) -> bool:
    try:
        with RunLock(run):
            return True
    except InputError:
        return False


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _logged(run: Path) -> int:
    log = run / "log.jsonl"
    return len(log.read_text().splitlines()) if log.is_file() else 0


def test_the_lock_is_exclusive_and_names_its_holder(tmp_path):
    with RunLock(tmp_path / "run"):
        record = json.loads((tmp_path / "run" / LOCK).read_text())
        assert record["pid"] == os.getpid()
        with pytest.raises(InputError, match=rf"being written by another process \(pid {os.getpid()} on "):
            RunLock(tmp_path / "run").__enter__()  # another open file description: flock refuses it too
    with RunLock(tmp_path / "run"):  # released on exit
        pass


def test_a_second_writer_stops_at_once_and_a_killed_one_holds_nothing(tmp_path, tiny_flux_dir):
    """Two `egrpo train` on one --out (the second a moment later) interleaved their log rows; now the
    second exits 2 naming the first, which trains on alone. Killed with SIGKILL, the first leaves no lock:
    the kernel releases a flock with its holder."""
    config, run = _config(tmp_path, tiny_flux_dir, 500), tmp_path / "run"
    cmd = [sys.executable, "-m", "egrpo", "train", "--config", str(config), "--out", str(run), "--no-progress"]
    first = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: _logged(run) >= 1, "the first writer's first iteration", proc=first)
        second = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, second.stderr[-2000:]
        assert f"{run} is being written by another process (pid {first.pid} on " in lines[0], lines
        rows = [json.loads(line)["iteration"] for line in (run / "log.jsonl").read_text().splitlines()]
        assert rows == list(range(len(rows)))  # one writer's rows only
        assert first.poll() is None  # the first is untouched
    finally:
        first.kill()
        first.wait(timeout=60)
    with RunLock(run):  # nothing stale: a retry may write the run again
        pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_ranks_of_a_torchrun_job_die_with_their_launcher(tmp_path, tiny_flux_dir):
    """`kill -9` of torchrun (each rank in a session of its own) left both ranks training; a retry then
    resumed beside them. Now each rank dies with its launcher, and rank 0 held the run's lock."""
    config, run = _config(tmp_path, tiny_flux_dir, 500), tmp_path / "run"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "egrpo",
         "train", "--config", str(config), "--out", str(run), "--no-progress"],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    ranks = []
    try:
        _wait_for(lambda: _logged(run) >= 1, "the job's first iteration", proc=launcher)
        ranks = _children(launcher.pid)
        assert len(ranks) == 2, ranks
        assert json.loads((run / LOCK).read_text())["pid"] in ranks  # rank 0 holds the run's lock
        launcher.kill()
        launcher.wait(timeout=60)
        _wait_for(lambda: not any(map(_alive, ranks)), "the ranks to die with their launcher", timeout=30)
        # the kernel releases the lock as the last descriptor closes, which on a loaded machine can trail
        # the ranks' exit by a moment; a launcher that left its ranks alive never frees it
        _wait_for(lambda: _lock_free(run), "the run's lock to be released", timeout=60)
    finally:
        for pid in [launcher.pid, *ranks]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
