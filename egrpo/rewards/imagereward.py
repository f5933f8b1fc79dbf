"""ImageReward v1.0 over the official `image-reward` package, on the project's transformers 5.

image-reward 1.5 was written for transformers 4.x (and pins timm 0.6, imports OpenAI's `clip` and
fairscale). Rather than a second pinned environment, a small compatibility layer (tested in
tests/test_rewards_real.py) restores the five helpers it imports from transformers 4, skips the
package's __init__ (which imports unrelated scorers needing `clip`), and loads the BERT tokenizer
from a local directory instead of the hub. The model code and weights are the package's own.
Install: `pip install --no-deps image-reward==1.5` (its pins would downgrade timm and transformers).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch

from . import Reward, require
from .images import reward_precision, to_pil
from .packages import missing



def _find_pruneable_heads_and_indices(heads, n_heads, head_size, already_pruned_heads):
    """transformers 4.x's helper (removed in 5): mask of kept dims after pruning `heads`."""
    mask = torch.ones(n_heads, head_size)
    heads = set(heads) - already_pruned_heads
    for head in heads:
        head = head - sum(1 if h < head else 0 for h in already_pruned_heads)
        mask[head] = 0
    mask = mask.view(-1).contiguous().eq(1)
    return heads, torch.arange(len(mask))[mask].long()


def _get_head_mask(self, head_mask, num_hidden_layers, is_attention_chunked=False):
    if head_mask is not None:
        raise NotImplementedError("ImageReward never passes a head mask")
    return [None] * num_hidden_layers


def _invert_attention_mask(self, encoder_attention_mask):
    mask = encoder_attention_mask[:, None, None, :] if encoder_attention_mask.dim() == 2 \
        else encoder_attention_mask[:, None, :, :]
    mask = mask.to(dtype=self.dtype)
    return (1.0 - mask) * torch.finfo(self.dtype).min


def _init_weights_tf4(self):
    """transformers 4's init_weights() could be called straight from __init__ (as BLIP's med.py does);
    transformers 5's expects post_init() to have registered the model's static properties first."""
    from transformers import PreTrainedModel

    if not hasattr(self, "all_tied_weights_keys"):
        PreTrainedModel.post_init(self)
    PreTrainedModel.init_weights(self)


def install_compat() -> None:
    """Idempotent: make `ImageReward.ImageReward` importable and runnable on transformers 5."""
    import transformers.modeling_utils as mu
    import transformers.pytorch_utils as pu

    for name in ("apply_chunking_to_forward", "prune_linear_layer"):
        if not hasattr(mu, name):
            setattr(mu, name, getattr(pu, name))
    if not hasattr(mu, "find_pruneable_heads_and_indices"):
        mu.find_pruneable_heads_and_indices = _find_pruneable_heads_and_indices
    if not hasattr(mu.PreTrainedModel, "get_head_mask"):
        mu.PreTrainedModel.get_head_mask = _get_head_mask
    if not hasattr(mu.PreTrainedModel, "invert_attention_mask"):
        mu.PreTrainedModel.invert_attention_mask = _invert_attention_mask
    if "fairscale.nn.checkpoint.checkpoint_activations" not in sys.modules and importlib.util.find_spec("fairscale") is None:
        def checkpoint_wrapper(*args, **kwargs):  # only used with vit_grad_ckpt=True, which ImageReward never sets
            raise NotImplementedError("fairscale is not installed: ImageReward's ViT gradient checkpointing is unavailable")

        for name in ("fairscale", "fairscale.nn", "fairscale.nn.checkpoint", "fairscale.nn.checkpoint.checkpoint_activations"):
            sys.modules.setdefault(name, types.ModuleType(name))
        sys.modules["fairscale.nn.checkpoint.checkpoint_activations"].checkpoint_wrapper = checkpoint_wrapper
    if sys.modules.get("ImageReward") is None:  # not imported yet (None: an import that must fail)
        spec = importlib.util.find_spec("ImageReward")
        if spec is None:
            raise missing("ImageReward")
        root = Path(spec.submodule_search_locations[0])
        for name, path in (("ImageReward", root), ("ImageReward.models", root / "models")):
            mod = types.ModuleType(name)  # namespace stubs: skip __init__'s imports of unrelated scorers
            mod.__path__ = [str(path)]
            sys.modules[name] = mod
    from ImageReward.models.BLIP import med

    med.BertPreTrainedModel.init_weights = _init_weights_tf4


def _local_tokenizer(tokenizer_dir: str):
    """BLIP's init_tokenizer, from a local bert-base-uncased directory instead of the hub."""
    from transformers import BertTokenizer

    def init_tokenizer():
        tok = BertTokenizer.from_pretrained(tokenizer_dir)
        tok.add_special_tokens({"bos_token": "[DEC]"})
        tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
        tok.enc_token_id = tok.convert_tokens_to_ids("[ENC]")  # additional_special_tokens_ids is gone in 5
        return tok

    return init_tokenizer


def vit_geometry(state: dict, prefix: str = "blip.visual_encoder.") -> dict:
    """The BLIP vision transformer's size read off a checkpoint: width and patch from the patch
    embedding, image size from the position table, depth from the block keys. The head count is not
    stored; BLIP's ViTs use 64-dim heads (ViT-L/16: 1024 / 64 = 16, as create_vit('large') builds)."""
    patch = state[prefix + "patch_embed.proj.weight"]  # [D, 3, P, P]
    tokens = state[prefix + "pos_embed"].shape[1] - 1
    width, size = patch.shape[0], patch.shape[-1]
    grid = int(round(tokens ** 0.5))
    depth = 1 + max(int(k[len(prefix) + 7:].split(".")[0]) for k in state if k.startswith(prefix + "blocks."))
    return {"img_size": grid * size, "patch_size": size, "embed_dim": width, "depth": depth,
            "num_heads": max(1, width // 64), "mlp_ratio": state[prefix + "blocks.0.mlp.fc1.weight"].shape[0] / width}


def build_image_reward(med_config: str, tokenizer_dir: str, geometry: dict, device="cpu"):
    """The package's ImageReward module (BLIP ViT + BERT cross-attention + MLP) with random weights and
    a ViT of the given geometry (vit_geometry); the package itself always builds ViT-L/16 at 224 px."""
    install_compat()
    from ImageReward.ImageReward import ImageReward, _transform
    from ImageReward.models.BLIP import blip_pretrain
    from ImageReward.models.BLIP.vit import VisionTransformer

    blip_pretrain.init_tokenizer = _local_tokenizer(tokenizer_dir)
    create_vit = blip_pretrain.create_vit
    blip_pretrain.create_vit = lambda *a, **k: (VisionTransformer(**geometry), geometry["embed_dim"])
    try:
        model = ImageReward(med_config=med_config, device=device)
    finally:
        blip_pretrain.create_vit = create_vit
    model.preprocess = _transform(geometry["img_size"])  # the package hard-codes 224
    return model


def load_image_reward(checkpoint: str, med_config: str, tokenizer_dir: str, device="cpu", dtype=torch.float32):
    """The official ImageReward with its weights; the ViT is built at the checkpoint's own size
    (ViT-L/16 at 224 px for the official file)."""
    from ..errors import InputError

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)  # the official file holds tensors only
        geometry = vit_geometry(state)
    except Exception as e:  # noqa: BLE001 - unreadable file or not an ImageReward state dict
        raise InputError(f"{checkpoint} is not an ImageReward checkpoint ({type(e).__name__}: {str(e)[:160]})") from None
    model = build_image_reward(med_config, tokenizer_dir, geometry, device)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise InputError(f"{checkpoint} does not fit ImageReward: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.to(device, dtype).eval().requires_grad_(False)


def imagereward(options: dict, device: torch.device) -> Reward:
    """ImageReward v1.0 score per (image, prompt): the package's own score() path, batched."""
    precision = reward_precision(options, device)
    model = load_image_reward(require(options, "checkpoint", "imagereward"),
                              require(options, "med_config", "imagereward"),
                              require(options, "tokenizer_dir", "imagereward"), device, precision.weights)

    @torch.no_grad()
    def score(images, prompts):
        text = model.blip.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=35,
                                    return_tensors="pt").to(device)
        x = torch.stack([model.preprocess(im) for im in to_pil(images)]).to(device, precision.weights)
        with precision.context():
            image_embeds = model.blip.visual_encoder(x)
            atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=device)
            out = model.blip.text_encoder(text.input_ids, attention_mask=text.attention_mask,
                                          encoder_hidden_states=image_embeds, encoder_attention_mask=atts, return_dict=True)
            rewards = model.mlp(out.last_hidden_state[:, 0, :]).float()
        return ((rewards - model.mean) / model.std)[:, 0].float().cpu()

    return score
