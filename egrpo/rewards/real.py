"""The paper's metrics over their official packages, weights from local paths (never a hub).

| reward       | package                      | scale in the paper's tables              |
|--------------|------------------------------|------------------------------------------|
| hpsv21       | hpsv2x (HPS v2.1, ViT-H-14)  | cosine(image, text) of the HPS model     |
| clip_score   | open_clip_torch              | cosine(image, text)                      |
| pickscore    | transformers CLIPModel       | logit_scale * cosine / 100 (~0.23)       |
| imagereward  | image-reward (BLIP)          | ImageReward v1.0 output (standardised)   |

Each factory loads its model once; the returned callable scores a batch.
"""

from __future__ import annotations

import torch

from . import Reward, register
from .images import require, to_pil

HPS_HINT = ("HPS_v2.1_compressed.pt from the Hugging Face repo xswu/HPSv2 (a dict with 'state_dict' for "
            "open_clip ViT-H-14)")
CLIP_HINT = ("an open_clip checkpoint file, e.g. open_clip_pytorch_model.bin of apple/DFN5B-CLIP-ViT-H-14-378 "
             "(model ViT-H-14-quickgelu) or laion/CLIP-ViT-H-14-laion2B-s32B-b79K (model ViT-H-14)")
PICK_HINT = "the save_pretrained directories of yuvalkirstain/PickScore_v1 and laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


def _cosine(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    return (image_features * text_features).sum(-1)


@register("hpsv21")
def hps_v21(options: dict, device: torch.device) -> Reward:
    """HPS v2.1: hpsv2's own open_clip fork, model and preprocessing (resize longest side, pad)."""
    from hpsv2.src.open_clip import create_model_and_transforms, get_tokenizer

    ckpt = require(options, "checkpoint", "hpsv21", HPS_HINT)
    name = options.get("model", "ViT-H-14")
    model, _, preprocess = create_model_and_transforms(
        name, None, precision="fp32", device=device, jit=False, force_quick_gelu=False, force_custom_text=False,
        force_patch_dropout=False, force_image_size=None, pretrained_image=False, image_mean=None, image_std=None,
        light_augmentation=True, aug_cfg={}, output_dict=True, with_score_predictor=False,
        with_region_predictor=False)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    model.load_state_dict(state["state_dict"] if "state_dict" in state else state)
    model.eval().requires_grad_(False)
    tokenizer = get_tokenizer(name)

    @torch.no_grad()
    def score(images, prompts):
        x = torch.stack([preprocess(im) for im in to_pil(images)]).to(device)
        out = model(x, tokenizer(list(prompts)).to(device))
        return _cosine(out["image_features"], out["text_features"]).float().cpu()

    return score


@register("clip_score")
def clip_score(options: dict, device: torch.device) -> Reward:
    """CLIP score: cosine similarity of open_clip image and text embeddings (default DFN5B ViT-H-14)."""
    import open_clip

    name = options.get("model", "ViT-H-14-quickgelu")
    if name.startswith("local-dir:"):
        pretrained = None
    else:
        pretrained = require(options, "checkpoint", "clip_score", CLIP_HINT)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
    model.eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(name)

    @torch.no_grad()
    def score(images, prompts):
        x = torch.stack([preprocess(im) for im in to_pil(images)]).to(device)
        return _cosine(model.encode_image(x), model.encode_text(tokenizer(list(prompts)).to(device))).float().cpu()

    return score


@register("pickscore")
def pickscore(options: dict, device: torch.device) -> Reward:
    """PickScore v1 on the paper's scale: logit_scale * cosine / 100."""
    from transformers import AutoProcessor, CLIPModel

    model_dir = require(options, "model_dir", "pickscore", PICK_HINT)
    processor = AutoProcessor.from_pretrained(require(options, "processor_dir", "pickscore", PICK_HINT))
    model = CLIPModel.from_pretrained(model_dir).to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def score(images, prompts):
        inputs = processor(images=to_pil(images), text=list(prompts), padding=True, truncation=True,
                           max_length=77, return_tensors="pt").to(device)
        out = model(**inputs)  # logits_per_image = logit_scale * cos, on transformers 4 and 5
        return (out.logits_per_image.diagonal() / 100.0).float().cpu()

    return score
