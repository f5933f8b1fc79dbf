"""Content digests of weight files and model directories: what pins a run's trained weights and its
base model by content rather than by path.

A file's digest is the sha256 of its bytes, computed once and cached by the file's path and identity:
its inode, size, modification time and change time (ns). Every write, truncation, copy over it or
rename onto it changes its mtime or ctime, and user space cannot set a ctime, so a cached digest is
the digest of the file's current bytes unless they were altered beneath the filesystem (a raw block
device, a filesystem that does not keep times): the guarantee is sha256's (another base model of the
same architecture, a retrained or replaced weights file, an edited config all differ), at the cost of
one full read of each file per cache (FLUX.1-dev's 34 GB, about a minute on local NVMe; afterwards a
stat per file). The identity holds no device number, so nodes sharing a filesystem and a cache (a home
folder on a cluster's shared filesystem: inodes and times come from the file server) share the reads.
The cache is a JSON file under $EGRPO_CACHE (default $XDG_CACHE_HOME/egrpo or ~/.cache/egrpo); a
cache that cannot be written only costs the reads again.

A model directory's digest covers model_index.json and every file of each component it names
(transformer, VAE, text encoders, tokenizers, scheduler): the weights and configs diffusers loads, and
nothing else (FLUX.1-dev's repository also holds the single-file checkpoint and its VAE, which the
pipeline never reads).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

CACHE_FILE = "digests.json"


def _cache_dir() -> Path:
    if os.environ.get("EGRPO_CACHE"):
        return Path(os.environ["EGRPO_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "egrpo"


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 16 MiB blocks (no cache: checkpoints' shards are read once)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (cached by the file's identity; see the module docstring)."""
    path = Path(path).resolve()
    st = path.stat()
    cache = _cache_dir() / CACHE_FILE
    entry = _read_cache(cache).get(str(path))
    if entry and entry[:-1] == _identity(st):
        return entry[-1]
    digest = sha256(path)
    if _identity(path.stat()) == _identity(st):  # unchanged while it was read
        _remember(cache, str(path), _identity(st) + [digest])
    return digest


def _remember(cache: Path, key: str, entry: list) -> None:
    """Add an entry to the cache file (locked read-modify-write; atomic replace)."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(cache.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = _read_cache(cache)
            entries = {k: v for k, v in entries.items() if Path(k).exists()}  # forget deleted files
            entries[key] = entry
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(entries))
            os.replace(tmp, cache)
    except OSError:
        pass  # a cache that cannot be written costs a re-read, never a wrong digest


def model_files(path: str | Path) -> list[Path]:
    """The files of a diffusers model directory that its pipeline loads: model_index.json and every file
    (not hidden) under each component folder it names, sorted."""
    path = Path(path)
    index = json.loads((path / "model_index.json").read_text())
    folders = sorted(k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[0])
    files = [path / "model_index.json"]
    for folder in folders:
        files += sorted(f for f in (path / folder).rglob("*")
                        if f.is_file() and not any(part.startswith(".") for part in f.relative_to(path).parts))
    return files


def model_digest(path: str | Path) -> dict:
    """{"sha256": the digest of the model, "files": {relative path: sha256}} of a diffusers directory."""
    path = Path(path)
    files = {f.relative_to(path).as_posix(): file_digest(f) for f in model_files(path)}
    text = "".join(f"{digest}  {name}\n" for name, digest in files.items())  # sha256sum's format
    return {"sha256": hashlib.sha256(text.encode()).hexdigest(), "files": files}


def model_difference(recorded: dict, actual: dict) -> str:
    """The first difference of two model digests, in words (a file changed, missing or added)."""
    old, new = recorded["files"], actual["files"]
    for name in sorted(set(old) | set(new)):
        if name not in new:
            return f"{name} is missing"
        if name not in old:
            return f"{name} was added"
        if old[name] != new[name]:
            return f"{name} has sha256 {new[name][:12]}, recorded {old[name][:12]}"
    return "no file differs"
