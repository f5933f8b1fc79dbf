"""Guards of a job's outputs, checked before any model loads: an output folder or file that can be
written, one writer per run directory, and training ranks that die with their launcher.

One writer: `egrpo train` holds an exclusive flock(2) on RUN/.lock for as long as it writes the run
(rank 0 of a torchrun job holds it for every rank: a second job's rank 0 stops at once, and torchrun
then stops that job's other ranks, which have written nothing). The kernel releases a flock when its
holder dies, however it dies, so a killed job never leaves a stale lock; the file records the holder
(pid, host, start, command) for the message a second writer gets.

Launcher: torchrun starts each rank in a session of its own, so `kill -9` of torchrun (or of the
Snakemake job that started it) would leave the ranks training; each rank asks the kernel to kill it
when its parent dies (prctl PR_SET_PDEATHSIG on Linux, a watchdog thread elsewhere).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from .errors import InputError
from .progress import log

LOCK = ".lock"


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


def writable_dir(path: str | Path, what: str, create: bool = True) -> Path:
    """Create folder `path` (and its parents) if needed and check that files can be written in it; a
    one-line InputError naming `what` and the path otherwise (a file in its place, a read-only or
    full filesystem, no permission). With `create` false nothing is created (a folder the job writes
    later, which a workflow manager would otherwise find half-made after a kill): its nearest existing
    folder is checked instead."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} is a file, not a folder")
    if not create and not path.exists():
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise InputError(f"{what} {path} cannot be created: {blocker} is a file, not a folder")
        existing = next(p for p in path.parents if p.exists())
        writable_dir(existing, f"{what} {path}: its folder")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise InputError(f"{what} {path} cannot be created: {blocker} is a file, not a folder") from None
        raise InputError(f"{what} {path} cannot be created ({_why(e)})") from None
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise InputError(f"{what} {path} is not writable ({_why(e)})") from None
    return path


def writable_file(path: str | Path, what: str) -> Path:
    """Check that file `path` can be written (its folder created if needed; no folder in its place)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder, not a file")
    writable_dir(path.parent, f"{what} {path}: its folder")
    return path


class RunLock:
    """An exclusive lock on a run directory for one writer (a context manager)."""

    def __init__(self, run_dir: str | Path, what: str = "--out"):
        self.dir, self.what, self.fd = Path(run_dir), what, None

    def __enter__(self) -> "RunLock":
        import fcntl

        writable_dir(self.dir, self.what)
        path = self.dir / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise InputError(f"{self.what} {self.dir}: cannot open its lock file {path} ({_why(e)})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)  # a filesystem without flock (some NFS or Lustre mounts): say so, go on
                log.warning("warning: %s: this filesystem does not support flock (%s); nothing stops a second "
                            "writer of this run directory", path, _why(e))
                return self
            holder = _holder(fd)
            os.close(fd)
            raise InputError(f"{self.what} {self.dir} is being written by another process ({holder}); wait for it to "
                             "finish or stop it, then run again") from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None


def _holder(fd: int) -> str:
    """Who holds a lock, as its file records (pid, host, since when, command)."""
    try:
        r = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {r['pid']} on {r['host']} since {r['since']}: {r['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet recorded itself"


def die_with_launcher() -> None:
    """Under torchrun: have the kernel kill this process when its parent (the launcher) dies, so no rank
    trains on after its job was killed; no-op for a process torchrun did not start."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        def watch():
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="egrpo-launcher-watch").start()
    if os.getppid() != parent:  # the launcher died before the request took effect
        os._exit(1)
