"""The paper's metrics over their official packages, weights from local paths (never a hub).

| reward       | package                      | scale in the paper's tables              |
|--------------|------------------------------|------------------------------------------|
| hpsv21       | hpsv2x (HPS v2.1, ViT-H-14)  | cosine(image, text) of the HPS model     |
| hpsv20       | hpsv2x (HPS v2.0, ViT-H-14)  | the same, v2.0 weights                   |
| clip_score   | open_clip_torch              | cosine(image, text)                      |
| pickscore    | transformers CLIPModel       | logit_scale * cosine / 100 (~0.23)       |
| imagereward  | image-reward (BLIP)          | ImageReward v1.0 output (standardised)   |

Each factory loads its model once; the returned callable scores a batch.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError, WeightsMissingError
from . import Reward, option_key, require, reward_spec
from .images import reward_precision, to_pil
from .packages import official


def _rowwise_dot(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """<image_k, text_k> per row, as the releases' diagonal of image @ text.T (a matrix product: under
    autocast it runs, and is rounded, in the autocast dtype as theirs is)."""
    return (image_features.unsqueeze(1) @ text_features.unsqueeze(2)).flatten()


def _cosine(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    return _rowwise_dot(F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1))


def _open_clip_config(name: str, register) -> str:
    """A model name, or the path of an open_clip model-config JSON (registered under its file stem)."""
    from pathlib import Path

    if name.endswith(".json"):
        register(Path(name))
        return Path(name).stem
    return name


def _position_embedding(checkpoint: str, state: dict | None = None) -> tuple | None:
    """Shape of the vision tower's position embedding in a checkpoint, read without loading it whole."""
    key = "visual.positional_embedding"
    if state is not None:
        return tuple(state[key].shape) if key in state else None
    if checkpoint.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(checkpoint, "pt") as f:
            return tuple(f.get_slice(key).get_shape()) if key in f.keys() else None
    state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    state = state.get("state_dict", state)
    return tuple(state[key].shape) if key in state else None


def check_open_clip_checkpoint(model_cfg: dict, checkpoint: str, key: str, state: dict | None = None) -> None:
    """open_clip silently resizes a checkpoint's position embedding to the model config's image size,
    which scores with another model than the checkpoint's: refuse a checkpoint of another geometry."""
    v = model_cfg["vision_cfg"]
    size = v["image_size"] if isinstance(v["image_size"], int) else v["image_size"][0]
    want = ((size // v["patch_size"]) ** 2 + 1, v["width"])
    got = _position_embedding(checkpoint, state)
    if got is not None and got != want:
        raise ConfigError(f"{key}: {checkpoint} is a checkpoint for {int((got[0] - 1) ** 0.5) * v['patch_size']} px "
                          f"images, but its model config is for {size} px (position embedding {got} vs "
                          f"{want}); pair the checkpoint with its own model config")


def hps_v21(options: dict, device: torch.device, reward: str = "hpsv21") -> Reward:
    """HPS v2.1: hpsv2's own open_clip fork, model and preprocessing (resize longest side, pad).
    options: checkpoint (HPS_v2.1_compressed.pt), model (default ViT-H-14, or a model-config JSON)."""
    with official("hpsv2"):
        from hpsv2.src.open_clip import add_model_config, create_model_and_transforms, get_model_config, get_tokenizer

    ckpt = require(options, "checkpoint", reward)
    name = _open_clip_config(options.get("model", "ViT-H-14"), add_model_config)
    precision = reward_precision(options, device)
    model, _, preprocess = create_model_and_transforms(
        name, None, precision="fp32", device=device, jit=False, force_quick_gelu=False, force_custom_text=False,
        force_patch_dropout=False, force_image_size=None, pretrained_image=False, image_mean=None, image_std=None,
        light_augmentation=True, aug_cfg={}, output_dict=True, with_score_predictor=False,
        with_region_predictor=False)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)  # the official file holds tensors only
    state = state["state_dict"] if "state_dict" in state else state
    check_open_clip_checkpoint(get_model_config(name), ckpt, option_key(reward, "checkpoint"), state)
    model.load_state_dict(state)
    model.to(precision.weights).eval().requires_grad_(False)
    tokenizer = get_tokenizer(name)

    @torch.no_grad()
    def score(images, prompts):
        x = torch.stack([preprocess(im) for im in to_pil(images)]).to(device, precision.weights)
        with precision.context():
            out = model(x, tokenizer(list(prompts)).to(device))  # hpsv2's CLIP returns normalised features
            return _rowwise_dot(out["image_features"], out["text_features"]).float().cpu()

    return score


def hps_v20(options: dict, device: torch.device) -> Reward:
    """HPS v2.0 (HPS_v2_compressed.pt): the same model and code as v2.1, earlier weights; the E-GRPO
    release's own training config names it (C fastvideo/config/reward/hps.yaml:7)."""
    return hps_v21(options, device, "hpsv20")


def clip_score(options: dict, device: torch.device) -> Reward:
    """CLIP score: cosine similarity of open_clip image and text embeddings. options.checkpoint is the
    model's directory as on the hub (open_clip_config.json + weights: architecture and preprocessing
    come with it; MixGRPO and G2RPO use apple/DFN5B-CLIP-ViT-H-14-378), or a weights file paired with
    options.model (a model name, default ViT-H-14-378-quickgelu, or a model-config JSON). A model
    given beside a directory must be the directory's own."""
    import json
    from pathlib import Path

    import open_clip
    from open_clip.factory import _find_checkpoint_in_dir

    ckpt = Path(require(options, "checkpoint", "clip_score"))
    key = option_key("clip_score", "checkpoint")
    if ckpt.is_dir():
        cfg_file = ckpt / "open_clip_config.json"
        if not cfg_file.is_file():
            raise WeightsMissingError(f"{key} = {ckpt} has no open_clip_config.json. Expected {reward_spec('clip_score').source}")
        model_cfg = json.loads(cfg_file.read_text())["model_cfg"]
        if "model" in options:
            named = open_clip.get_model_config(_open_clip_config(options["model"], open_clip.add_model_config))
            if named != model_cfg:
                raise ConfigError(f"{option_key('clip_score', 'model')} = {options['model']} is not the model of {ckpt} "
                                  "(its open_clip_config.json differs); drop the model option")
        weights, name = _find_checkpoint_in_dir(ckpt), f"local-dir:{ckpt}"
    else:
        name = _open_clip_config(options.get("model", "ViT-H-14-378-quickgelu"), open_clip.add_model_config)
        model_cfg, weights = open_clip.get_model_config(name), str(ckpt)
        if model_cfg is None:
            raise ConfigError(f"{option_key('clip_score', 'model')}: unknown open_clip model {name!r}")
    if weights is None:
        raise WeightsMissingError(f"{key} = {ckpt} holds no weights file. Expected {reward_spec('clip_score').source}")
    check_open_clip_checkpoint(model_cfg, weights, key)
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=None if ckpt.is_dir() else weights, device=device, require_pretrained=True)
    precision = reward_precision(options, device)
    model.to(precision.weights).eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(name)

    @torch.no_grad()
    def score(images, prompts):
        x = torch.stack([preprocess(im) for im in to_pil(images)]).to(device, precision.weights)
        text = tokenizer(list(prompts)).to(device)
        with precision.context():
            return _cosine(model.encode_image(x), model.encode_text(text)).float().cpu()

    return score


def pickscore(options: dict, device: torch.device) -> Reward:
    """PickScore v1 on the paper's scale: logit_scale * cosine / 100."""
    from transformers import AutoProcessor, CLIPModel

    model_dir = require(options, "model_dir", "pickscore")
    processor = AutoProcessor.from_pretrained(require(options, "processor_dir", "pickscore"))
    precision = reward_precision(options, device)
    model = CLIPModel.from_pretrained(model_dir).to(device, precision.weights).eval().requires_grad_(False)

    @torch.no_grad()
    def score(images, prompts):
        inputs = processor(images=to_pil(images), text=list(prompts), padding=True, truncation=True,
                           max_length=77, return_tensors="pt").to(device)
        inputs["pixel_values"] = inputs["pixel_values"].to(precision.weights)
        with precision.context():
            out = model(**inputs)  # logits_per_image = logit_scale * cos, on transformers 4 and 5
        return (out.logits_per_image.diagonal().float() / 100.0).cpu()

    return score
