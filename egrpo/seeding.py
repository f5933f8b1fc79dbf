"""Seeded generators derived from named parts, so every random draw is reproducible and independent
of batching, process count and order: e.g. generator("egrpo", seed, "iter", 3, "prompt", 17)."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts) -> int:
    """A 63-bit seed from the repr of `parts` (stable across runs, platforms and Python versions)."""
    digest = hashlib.sha256(repr(tuple(parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(*parts, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator seeded from `parts`."""
    return torch.Generator(device=device).manual_seed(derive_seed(*parts))


def randn_rows(shape: tuple[int, ...], generators: list[torch.Generator], device="cpu") -> torch.Tensor:
    """One standard-normal row per generator, stacked: row k depends on generators[k] alone.

    Drawn on the CPU so the numbers do not depend on the device either.
    """
    rows = [torch.randn(shape, generator=g, dtype=torch.float32) for g in generators]
    return torch.stack(rows).to(device)
