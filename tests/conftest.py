import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory):
    """A tiny FLUX-format pipeline written offline once per test session."""
    from egrpo.tiny_flux import save_tiny_flux

    return save_tiny_flux(tmp_path_factory.mktemp("tiny_flux"))


@pytest.fixture(scope="session")
def backbone(tiny_flux_dir):
    from egrpo.flux import FluxBackbone

    return FluxBackbone.from_pretrained(tiny_flux_dir)
