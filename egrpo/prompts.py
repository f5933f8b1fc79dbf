"""Prompt sets: an inline list, a text file (one prompt a line), or a `datasets` dataset on disk."""

from __future__ import annotations

from pathlib import Path


def load_prompts(spec: str | list[str], column: str = "prompt") -> list[str]:
    """Prompts from a list, a .txt file, a saved `datasets` dataset directory, or a .json/.jsonl/.csv/
    .parquet file read with `datasets` (column `column`). Missing files raise with the path."""
    if isinstance(spec, list):
        prompts = [str(p) for p in spec]
    else:
        path = Path(spec)
        if not path.exists():
            raise FileNotFoundError(f"prompt source {path} does not exist")
        if path.is_dir():
            from datasets import load_from_disk

            ds = load_from_disk(str(path))
            prompts = list(ds[column])
        elif path.suffix == ".txt":
            prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        else:
            from datasets import load_dataset

            kind = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}[path.suffix]
            prompts = list(load_dataset(kind, data_files=str(path), split="train")[column])
    if not prompts:
        raise ValueError(f"prompt source {spec!r} holds no prompts")
    return prompts
