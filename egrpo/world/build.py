"""Write the shapes world's prompt sets and its fidelity critic."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..determinism import record
from .scorers import train_attribute_net
from .shapes import ALL_CAPTIONS, TEST_CAPTIONS, TRAIN_CAPTIONS, make_dataset
from .spec import WorldSpec


def build_world(out: str | Path, spec: WorldSpec = WorldSpec()) -> Path:
    """out/prompts_train, out/prompts_test (`datasets` saved to disk, columns prompt/color/shape/
    position/held_out), out/critic.pt (the fidelity critic, trained on renders of all 72 captions:
    it is an evaluator of the world, not the generator, so it sees the held-out combinations)."""
    from datasets import Dataset

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for split, caps in (("train", TRAIN_CAPTIONS), ("test", TEST_CAPTIONS)):
        Dataset.from_dict({
            "prompt": [c.text for c in caps], "color": [c.color for c in caps], "shape": [c.shape for c in caps],
            "position": [c.position for c in caps], "held_out": [c.held_out for c in caps],
        }).save_to_disk(str(out / f"prompts_{split}"))
    images, idx = make_dataset(ALL_CAPTIONS, spec.critic_images, 32, spec.seed + 1)
    net = train_attribute_net(images, [ALL_CAPTIONS[k].text for k in idx], steps=spec.critic_steps, seed=spec.seed)
    torch.save(net.state_dict(), out / "critic.pt")
    (out / "world.json").write_text(json.dumps({
        "train_prompts": len(TRAIN_CAPTIONS), "test_prompts": len(TEST_CAPTIONS),
        "held_out_test_prompts": sum(c.held_out for c in TEST_CAPTIONS), "seed": spec.seed,
        "provenance": record()}, indent=2))
    return out
