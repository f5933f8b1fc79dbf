"""Write a tiny FLUX-format pipeline offline: real diffusers/transformers classes, random weights.

The result is a directory in exactly the layout of black-forest-labs/FLUX.1-dev (model_index.json,
transformer/, vae/, text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/, scheduler/), so the
same loader (`egrpo.flux.FluxBackbone.from_pretrained`) serves tests, the embedded default world and
FLUX.1-dev. Tokenizers are word-level `tokenizers` models built in-process (no hub, no
sentencepiece model ships anywhere); both text encoders share the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[EOS]")

DEFAULT_WORDS = tuple(
    "a an the of and with on in at to is are one two three four small large big tiny red green blue "
    "yellow white black orange purple pink gray brown circle square triangle star cat dog photo "
    "painting picture top bottom left right center middle dark light background fruit dressed as "
    "sailor spoon up eyes smile".split()
)


@dataclass(frozen=True)
class TinyFluxSpec:
    """Sizes of a tiny FLUX-architecture pipeline (defaults: ~0.3M-param transformer, /4 VAE)."""

    words: tuple[str, ...] = DEFAULT_WORDS
    max_text_len: int = 16
    text_dim: int = 32  # T5 d_model = joint_attention_dim
    clip_dim: int = 32  # CLIP hidden = pooled_projection_dim
    latent_channels: int = 8
    vae_channels: tuple[int, ...] = (16, 32, 32)  # 3 blocks -> /4 downsampling
    num_layers: int = 1
    num_single_layers: int = 2
    num_heads: int = 2
    head_dim: int = 16
    axes_dims_rope: tuple[int, int, int] = (4, 6, 6)
    vae_scaling_factor: float = 1.0
    vae_shift_factor: float = 0.0
    seed: int = 0


def build_tokenizer(words: Sequence[str], max_len: int):
    """Word-level, lower-cased tokenizer that appends [EOS] (CLIP pools at the first EOS)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: k for k, tok in enumerate(SPECIAL_TOKENS)}
    for w in words:
        vocab.setdefault(w.lower(), len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A [EOS]", special_tokens=[("[EOS]", vocab["[EOS]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]",
        model_max_length=max_len,
    )


def build_tiny_flux(spec: TinyFluxSpec = TinyFluxSpec(), tokenizer=None, tokenizer_2=None):
    """A FluxPipeline of real classes with seeded random weights. Without tokenizers given, both text
    encoders share one word-level vocabulary of `spec.words` (the embedded world); `egrpo.standins`
    passes FLUX.1-dev's tokenizer classes (CLIPTokenizer, T5TokenizerFast)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    if sum(spec.axes_dims_rope) != spec.head_dim:
        raise ValueError(f"axes_dims_rope {spec.axes_dims_rope} must sum to head_dim {spec.head_dim}")
    tokenizer = tokenizer or build_tokenizer(spec.words, spec.max_text_len)
    tokenizer_2 = tokenizer_2 or build_tokenizer(spec.words, spec.max_text_len)
    torch.manual_seed(spec.seed)
    eos = tokenizer.eos_token_id
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=spec.clip_dim, intermediate_size=2 * spec.clip_dim,
        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=tokenizer.model_max_length,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos, eos_token_id=eos,
        bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos,
    ))
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_2), d_model=spec.text_dim, d_kv=spec.text_dim // 2, d_ff=2 * spec.text_dim,
        num_layers=1, num_heads=2, pad_token_id=tokenizer_2.pad_token_id, eos_token_id=tokenizer_2.eos_token_id,
        decoder_start_token_id=tokenizer_2.pad_token_id,
    ))
    n_blocks = len(spec.vae_channels)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n_blocks, up_block_types=("UpDecoderBlock2D",) * n_blocks,
        block_out_channels=spec.vae_channels, layers_per_block=1, latent_channels=spec.latent_channels,
        norm_num_groups=min(8, *spec.vae_channels), use_quant_conv=False, use_post_quant_conv=False,
        mid_block_add_attention=False, scaling_factor=spec.vae_scaling_factor, shift_factor=spec.vae_shift_factor,
    )
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4 * spec.latent_channels, num_layers=spec.num_layers,
        num_single_layers=spec.num_single_layers, attention_head_dim=spec.head_dim,
        num_attention_heads=spec.num_heads, joint_attention_dim=spec.text_dim,
        pooled_projection_dim=spec.clip_dim, guidance_embeds=True, axes_dims_rope=spec.axes_dims_rope,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=False)
    return FluxPipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer,
    )


def save_tiny_flux(path: str | Path, spec: TinyFluxSpec = TinyFluxSpec()) -> Path:
    """Build a tiny pipeline and save it in diffusers' Flux format (safetensors); returns the path."""
    path = Path(path)
    build_tiny_flux(spec).save_pretrained(path, safe_serialization=True)
    return path
