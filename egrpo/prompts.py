"""Prompt sets: an inline list, a text file (one prompt a line), or a `datasets` dataset on disk."""

from __future__ import annotations

from pathlib import Path

from .errors import InputError

SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def load_prompts(spec: str | list[str], column: str = "prompt", key: str = "prompts") -> list[str]:
    """Prompts from a list, a .txt file, a saved `datasets` dataset directory, or a .json/.jsonl/.csv/
    .parquet file read with `datasets` (column `column`). Every failure is a one-line InputError
    naming the config key and the file."""
    if isinstance(spec, list):
        prompts = [str(p) for p in spec]
    else:
        path = Path(spec)
        if not path.exists():
            raise InputError(f"{key}: prompt source {path} does not exist")
        if path.is_dir():
            prompts = _from_dataset(path, column, key)
        elif path.suffix == ".txt":
            try:
                prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            except UnicodeDecodeError as e:
                raise InputError(f"{key}: {path} is not UTF-8 text (byte {e.start})") from None
        elif path.suffix in SUFFIXES:
            prompts = _from_file(path, column, key)
        else:
            raise InputError(f"{key}: {path}: unknown prompt file type {path.suffix or '(none)'!r} (use .txt, "
                             f"{', '.join(SUFFIXES)} or a saved `datasets` directory)")
    if not prompts:
        raise InputError(f"{key}: prompt source {spec if isinstance(spec, str) else '(inline list)'} holds no prompts")
    return prompts


def _from_dataset(path: Path, column: str, key: str) -> list[str]:
    from datasets import load_from_disk

    try:
        ds = load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as e:
        raise InputError(f"{key}: {path} is not a saved `datasets` directory ({str(e).splitlines()[0][:200]})") from None
    if column not in ds.column_names:
        raise InputError(f"{key}: {path} has no column {column!r} (columns: {', '.join(ds.column_names)})")
    return [str(p) for p in ds[column]]


def _from_file(path: Path, column: str, key: str) -> list[str]:
    from datasets import load_dataset

    try:
        ds = load_dataset(SUFFIXES[path.suffix], data_files=str(path), split="train")
    except Exception as e:  # noqa: BLE001 - datasets raises many types for a malformed file
        raise InputError(f"{key}: {path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if column not in ds.column_names:
        raise InputError(f"{key}: {path} has no column {column!r} (columns: {', '.join(ds.column_names)})")
    return [str(p) for p in ds[column]]
