"""The exported weights: a diffusers FluxTransformer2DModel directory anyone can load, found again when
the results and the base model move together."""

import json
import shutil

import torch
from safetensors.torch import load_file

from conftest import tiny_run_config
from egrpo.checkpoint import load_trained
from egrpo.config import resolve
from egrpo.tiny_flux import save_tiny_flux
from egrpo.trainer import Trainer


def test_a_full_fine_tune_exports_a_diffusers_transformer_that_moves_with_its_base(tmp_path):
    from diffusers import FluxTransformer2DModel

    base = save_tiny_flux(tmp_path / "site" / "models" / "base")
    run = tmp_path / "site" / "results" / "run"
    cfg = resolve(tiny_run_config(base, "dancegrpo", train={"iterations": 1}), "dancegrpo")
    Trainer(cfg, run, progress=False).train()
    final = run / "final"
    trained = load_file(str(final / "trainable.safetensors"))
    assert (final / "trainable.safetensors").samefile(final / "transformer" / "diffusion_pytorch_model.safetensors")

    # diffusers alone loads it, with the base model's architecture and the trained values
    model = FluxTransformer2DModel.from_pretrained(final / "transformer")
    assert model.config.num_layers == FluxTransformer2DModel.load_config(base / "transformer")["num_layers"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in trained.items())
    assert set(model.state_dict()) == set(trained)
    base_weights = FluxTransformer2DModel.from_pretrained(base / "transformer").state_dict()
    assert any(not torch.equal(base_weights[k], v) for k, v in trained.items())  # they were trained

    # the results folder and the base model moved together: found by the relative path
    shutil.move(tmp_path / "site", tmp_path / "moved")
    meta = json.loads((tmp_path / "moved" / "results" / "run" / "final" / "meta.json").read_text())
    assert not (tmp_path / "site").exists() and meta["base_relative"] == "../../../models/base"
    backbone = load_trained(tmp_path / "moved" / "results" / "run" / "final")
    assert all(torch.equal(backbone.transformer.state_dict()[k], v) for k, v in trained.items())
    assert backbone.weights_id == meta["weights_sha256"][:12]
