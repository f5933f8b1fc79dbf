"""The embedded world: deterministic generation, scorers that rank matching pairs first, and a tiny
pretraining run that the FLUX loader loads."""

import torch

from egrpo.world.scorers import (Fidelity, alignment, correct_attributes, preference, realism,
                                 train_attribute_net)
from egrpo.world.shapes import ALL_CAPTIONS, TEST_CAPTIONS, TRAIN_CAPTIONS, make_dataset, parse_caption, prompt_sets


def test_generation_is_deterministic_and_splits_hold_out_combinations():
    a, ia = make_dataset(TEST_CAPTIONS, 100, 32, seed=3)
    b, ib = make_dataset(TEST_CAPTIONS, 100, 32, seed=3)
    assert torch.equal(a, b) and ia == ib
    assert not torch.equal(a, make_dataset(TEST_CAPTIONS, 100, 32, seed=4)[0])
    sets = prompt_sets()
    assert len(sets["test"]) == 72 >= 64 and len(sets["train"]) == 48
    unseen = set(sets["test"]) - set(sets["train"])
    assert len(unseen) == 24 and all(parse_caption(p).held_out for p in unseen)


def _pairs(n=216):
    images, idx = make_dataset(TEST_CAPTIONS, n, 32, seed=1)
    right = [TEST_CAPTIONS[k].text for k in idx]
    wrong = [TEST_CAPTIONS[(k + 7) % 72].text for k in idx]  # differs in shape and position (and colour)
    return images, right, wrong


def test_exact_parser_reads_every_render():
    images, right, _ = _pairs()
    assert correct_attributes(images, right).all()


def test_each_scorer_ranks_matching_pairs_above_mismatched():
    images, right, wrong = _pairs()
    train_imgs, idx = make_dataset(ALL_CAPTIONS, 1500, 32, seed=2)
    critic = Fidelity(train_attribute_net(train_imgs, [ALL_CAPTIONS[k].text for k in idx], steps=150, seed=0))
    for fn in (preference, alignment, realism, critic):
        good, bad = fn(images, right), fn(images, wrong)
        assert good.shape == (len(images),) and torch.isfinite(good).all()
        assert (good > bad).float().mean() > 0.95, fn


def test_tiny_pretraining_yields_a_loadable_flux_model(tmp_path):
    from egrpo.flux import FluxBackbone
    from egrpo.world.pretrain import pretrain
    from egrpo.world.spec import WorldSpec

    spec = WorldSpec(pretrain={"images": 32, "vae_steps": 2, "flow_steps": 2})
    out = pretrain(tmp_path / "base", spec, log=lambda *_: None)
    bb = FluxBackbone.from_pretrained(out, max_sequence_length=10)
    assert bb.latent_channels == 8 and bb.packed_shape(32, 32) == (16, 32)
    cfg = bb.pipe.vae.config
    assert cfg.scaling_factor != 1.0 and cfg.shift_factor != 0.0  # latent statistics written
    e = bb.encode_prompts([TRAIN_CAPTIONS[0].text])
    assert bb.velocity(torch.randn(1, 16, 32), 0.5, e, 32, 32).shape == (1, 16, 32)


def test_evidence_accuracy_averages_every_evaluation_sample(tmp_path):
    """The evidence script's accuracy counts all K images of a prompt: sample 0 drawn right and
    sample 1 drawn as another caption average to the mean of the two."""
    import numpy as np

    from egrpo.evaluate import image_name, save_images
    from egrpo.world.evidence import accuracy, folder_accuracy
    from egrpo.world.shapes import render

    prompts = [c.text for c in TEST_CAPTIONS]
    rng = np.random.default_rng(0)
    draw = lambda caps: torch.from_numpy(np.stack([render(c, 32, rng) for c in caps]))  # noqa: E731
    right, wrong = draw(TEST_CAPTIONS), draw([TEST_CAPTIONS[(k + 7) % 72] for k in range(72)])
    save_images(right, [image_name(k, 0) for k in range(72)], tmp_path)
    save_images(wrong, [image_name(k, 1) for k in range(72)], tmp_path)
    both = folder_accuracy(tmp_path, prompts)
    assert accuracy(right, prompts)["all"] == 1.0 and accuracy(wrong, prompts)["all"] == 0.0
    assert both["all"] == 0.5
