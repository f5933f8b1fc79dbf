"""The shapes world's settings, one validated spec for `egrpo world build` and `egrpo world pretrain`
(and the Snakemake config's `world:` section, which the DAG writes to results/configs/world/<hash>.json)."""

from __future__ import annotations

from pydantic import Field

from ..config import DeterminismConfig, Strict


class PretrainSpec(Strict):
    """The base model's pretraining: a VAE, then the transformer by flow matching, counted in steps."""

    images: int = Field(4000, ge=16, description="renders of the training captions pretrained on")
    size: int = Field(32, ge=8, description="image side in pixels")
    vae_steps: int = Field(1200, ge=1, description="AdamW steps of the VAE")
    vae_batch: int = Field(16, ge=1)
    vae_lr: float = Field(3e-3, gt=0)
    flow_steps: int = Field(2000, ge=1, description="AdamW steps of the transformer (flow matching)")
    flow_batch: int = Field(64, ge=1)
    flow_lr: float = Field(1e-3, gt=0)
    caption_dropout: float = Field(0.1, ge=0, lt=1, description="share of captions dropped (trains the unconditional)")


class WorldSpec(Strict):
    """The embedded default world, built and pretrained by the DAG (its presence enables rules world_*)."""

    seed: int = Field(0, ge=0, description="seeds the renders, the critic and the pretraining")
    critic_steps: int = Field(300, ge=1, description="training steps of the fidelity critic")
    critic_images: int = Field(3000, ge=1, description="renders of all 72 captions the critic trains on")
    pretrain: PretrainSpec = Field(default_factory=PretrainSpec)
    determinism: DeterminismConfig = Field(
        default_factory=DeterminismConfig, description="which kernels the build and the pretraining may run "
        "(egrpo/determinism.py); the DAG writes the Snakemake config's top-level `determinism` here")
