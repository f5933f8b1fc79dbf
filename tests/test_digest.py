"""Content digests (egrpo.digest): a file's sha256 cached by its identity, recomputed whenever its bytes
may have changed (even with its size and mtime restored); a model directory's digest and the first
difference of two."""

import hashlib
import json
import os
import shutil

from egrpo import digest


def test_a_files_digest_is_its_sha256_cached_until_it_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("EGRPO_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 1000)
    assert digest.file_digest(path) == hashlib.sha256(b"a" * 1000).hexdigest()
    reads = []
    real = digest.sha256
    monkeypatch.setattr(digest, "sha256", lambda p: reads.append(p) or real(p))
    assert digest.file_digest(path) == hashlib.sha256(b"a" * 1000).hexdigest() and reads == []  # cached
    st = path.stat()
    path.write_bytes(b"b" * 1000)  # same size, and the mtime put back: the ctime still moves
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert digest.file_digest(path) == hashlib.sha256(b"b" * 1000).hexdigest() and len(reads) == 1


def test_a_model_digest_names_the_first_file_that_differs(tmp_path, tiny_flux_dir, monkeypatch):
    monkeypatch.setenv("EGRPO_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "copy"
    shutil.copytree(tiny_flux_dir, copy)
    a, b = digest.model_digest(tiny_flux_dir), digest.model_digest(copy)
    assert a == b  # by content, wherever it is
    assert "transformer/diffusion_pytorch_model.safetensors" in a["files"] and "model_index.json" in a["files"]
    config = copy / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "shift": 2.0}))
    (copy / "tokenizer" / "notes.txt").write_text("x")
    c = digest.model_digest(copy)
    assert c["sha256"] != a["sha256"]
    assert digest.model_difference(a, c).startswith("scheduler/scheduler_config.json has sha256")
    (copy / "scheduler" / "scheduler_config.json").unlink()
    assert digest.model_difference(a, digest.model_digest(copy)) == "scheduler/scheduler_config.json is missing"
