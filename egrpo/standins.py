"""Tiny stand-ins of everything config/flux.yaml points at, written offline in the real formats and
folder layouts, and a config overlay that runs the paper's DAG on them in minutes on a CPU:

    egrpo stand-ins DIR
    snakemake --cores all --configfile config/flux.yaml DIR/overlay.yaml

| stand-in | real counterpart, same classes and on-disk format |
|---|---|
| FLUX.1-dev/ | black-forest-labs/FLUX.1-dev: FluxPipeline.save_pretrained (FluxTransformer2DModel with 64 input channels, AutoencoderKL /8 with 16 latent channels and FLUX.1-dev's scaling 0.3611 and shift 0.1159, CLIPTokenizer on open_clip's BPE vocabulary, T5TokenizerFast) |
| HPS_v2.1_compressed.pt | xswu/HPSv2: {'state_dict': ...} of an open_clip model (a tiny architecture, hps-tiny.json) |
| DFN5B-CLIP-ViT-H-14-378/ | apple/DFN5B-CLIP-ViT-H-14-378: open_clip_config.json + open_clip_pytorch_model.bin |
| PickScore_v1/, CLIP-ViT-H-14-laion2B-s32B-b79K/ | yuvalkirstain/PickScore_v1 (CLIPModel) and its CLIPProcessor |
| ImageReward/, bert-base-uncased/ | THUDM/ImageReward: ImageReward.pt + med_config.json; a BERT vocab.txt |
| hpdv2/ | HPDv2 train and test prompts, one a line |

The models are random: they test that every path, format and rule works, not what it scores. The
tests build their tiny models here too (one place).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
import yaml

FLUX_VAE_SCALING, FLUX_VAE_SHIFT = 0.3611, 0.1159  # FLUX.1-dev's vae/config.json

SUBJECTS = ("papaya fruit", "spoon", "lighthouse", "cat", "teapot", "robot", "sailboat", "fox", "castle", "violin",
            "astronaut", "owl", "cactus", "bicycle", "dragon", "mushroom")
DOINGS = ("dressed as a sailor", "dressed up with eyes and a smile", "at dusk", "in the rain", "made of glass",
          "on a snowy hill", "wearing a tiny hat", "under a starry sky", "floating in space", "in a busy market")
STYLES = ("", "watercolor painting", "oil painting", "digital art", "photo", "pencil sketch", "3d render")


def hpdv2_prompts(n: int, seed: int) -> list[str]:
    """HPDv2-style prompts ("A papaya fruit dressed as a sailor, oil painting"), deterministic in seed."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        style = rng.choice(STYLES)
        text = f"A {rng.choice(SUBJECTS)} {rng.choice(DOINGS)}"
        out.append(f"{text}, {style}" if style else text)
    return out


# ---- tokenizers of FLUX.1-dev's classes -------------------------------------------------------
def clip_tokenizer(path: Path):
    """FLUX.1-dev's CLIPTokenizer, derived exactly from open_clip's shipped BPE vocabulary (no hub).
    Built from files: constructing it from file arguments silently builds an empty one in transformers 5."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    bpe = SimpleTokenizer()
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(bpe.encoder))
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    return CLIPTokenizer.from_pretrained(path)


def t5_tokenizer(corpus: list[str], max_length: int, vocab_size: int = 200):
    """A T5TokenizerFast over a unigram model trained on `corpus` (no T5 sentencepiece model ships here)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import T5TokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=vocab_size, unk_token="<unk>",
                                                            special_tokens=["<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0,
                           model_max_length=max_length)


def write_flux(path: Path, corpus: list[str], max_text_len: int = 32) -> Path:
    """A FLUX.1-dev-format pipeline at tiny size (64x64 images are 16 latent tokens)."""
    from .tiny_flux import TinyFluxSpec, build_tiny_flux

    spec = TinyFluxSpec(max_text_len=max_text_len, latent_channels=16, vae_channels=(16, 16, 32, 32),
                        vae_scaling_factor=FLUX_VAE_SCALING, vae_shift_factor=FLUX_VAE_SHIFT)
    pipe = build_tiny_flux(spec, clip_tokenizer(path.parent / ".clip_tokenizer"), t5_tokenizer(corpus, max_text_len))
    pipe.save_pretrained(path, safe_serialization=True)
    return path


# ---- reward models --------------------------------------------------------------------------------
TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def tiny_open_clip_config(path: Path, name: str, **vision) -> Path:
    """An open_clip model-config JSON of a tiny architecture (registered under its file stem)."""
    cfg = json.loads(json.dumps(TINY_OPEN_CLIP))
    cfg["vision_cfg"].update(vision)
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{name}.json").write_text(json.dumps(cfg))
    return path / f"{name}.json"


def write_hps(path: Path, seed: int = 0) -> tuple[Path, Path]:
    """HPS_v2.1_compressed.pt of a tiny architecture, and that architecture's config (the reward's
    `model` option; the real file needs none: ViT-H-14)."""
    from .rewards.packages import official

    with official("hpsv2"):
        from hpsv2.src.open_clip import add_model_config, create_model_and_transforms

    config = tiny_open_clip_config(path, "hps-tiny")
    add_model_config(config)
    torch.manual_seed(seed)
    model, _, _ = create_model_and_transforms("hps-tiny", None, output_dict=True)
    ckpt = path / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": {k: v.half() for k, v in model.state_dict().items()}}, ckpt)  # fp16, as the real file
    return ckpt, config


def write_open_clip_dir(path: Path, seed: int = 1, image_size: int = 64) -> Path:
    """An open_clip model directory as on the hub (open_clip_config.json + open_clip_pytorch_model.bin)."""
    import open_clip

    cfg = json.loads(json.dumps(TINY_OPEN_CLIP))
    cfg["vision_cfg"]["image_size"] = image_size
    cfg["quick_gelu"] = True
    path.mkdir(parents=True, exist_ok=True)
    (path / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": cfg, "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                                             "std": [0.26862954, 0.26130258, 0.27577711],
                                             "interpolation": "bicubic", "resize_mode": "squash"}}))
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{path}", load_weights=False)
    torch.save(model.state_dict(), path / "open_clip_pytorch_model.bin")
    return path


def write_pickscore(model_dir: Path, processor_dir: Path, seed: int = 2) -> tuple[Path, Path]:
    """PickScore_v1 (a CLIPModel) and the processor of CLIP-ViT-H-14-laion2B-s32B-b79K, at tiny size."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tok = clip_tokenizer(processor_dir / ".tokenizer")
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, eos_token_id=tok.eos_token_id,
                         bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(image_size=224, patch_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2),
        projection_dim=16))
    model.save_pretrained(model_dir)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tok).save_pretrained(processor_dir)
    return model_dir, processor_dir


def write_image_reward(path: Path, tokenizer_dir: Path, words: list[str], seed: int = 3) -> dict[str, Path]:
    """ImageReward.pt and med_config.json (a 1-layer BERT: its hidden size must stay 768, the package's
    head hard-codes it; a tiny ViT), and a BERT vocab.txt. The untrained head scores nearly alike:
    it is re-initialised with spread."""
    from .rewards.imagereward import build_image_reward

    path.mkdir(parents=True, exist_ok=True)
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(words))]
    (tokenizer_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    med = path / "med_config.json"
    med.write_text(json.dumps({
        "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.0, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 128,
        "layer_norm_eps": 1e-12, "max_position_embeddings": 64, "model_type": "bert", "num_attention_heads": 12,
        "num_hidden_layers": 1, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": len(vocab) + 2,
        "encoder_width": 64, "add_cross_attention": True}))
    geometry = {"img_size": 64, "patch_size": 16, "embed_dim": 64, "depth": 1, "num_heads": 1, "mlp_ratio": 4.0}
    torch.manual_seed(seed)
    model = build_image_reward(str(med), str(tokenizer_dir), geometry)
    for p in model.mlp.parameters():
        torch.nn.init.normal_(p, std=0.5)
    ckpt = path / "ImageReward.pt"
    torch.save(model.state_dict(), ckpt)
    return {"checkpoint": ckpt, "med_config": med, "tokenizer_dir": tokenizer_dir}


# ---- everything, and the overlay ------------------------------------------------------------------
def write_stand_ins(out: str | Path) -> Path:
    """Write every stand-in under `out` and out/overlay.yaml (inputs pointed at them, budget scaled
    down to minutes on a CPU); returns the overlay's path."""
    out = Path(out).resolve()
    train, test = hpdv2_prompts(48, seed=0), hpdv2_prompts(8, seed=1)
    (out / "hpdv2").mkdir(parents=True, exist_ok=True)
    (out / "hpdv2" / "train_prompts.txt").write_text("\n".join(train) + "\n")
    (out / "hpdv2" / "test_prompts.txt").write_text("\n".join(test) + "\n")
    corpus = train + test + ["A papaya fruit dressed as a sailor", "A spoon dressed up with eyes and a smile"]
    write_flux(out / "FLUX.1-dev", corpus)
    hps, hps_model = write_hps(out / "hps")
    clip_dir = write_open_clip_dir(out / "DFN5B-CLIP-ViT-H-14-378")
    pick_model, pick_processor = write_pickscore(out / "PickScore_v1", out / "CLIP-ViT-H-14-laion2B-s32B-b79K")
    ir = write_image_reward(out / "ImageReward", out / "bert-base-uncased",
                            [w.strip(",").lower() for p in corpus for w in p.split()])
    overlay = {
        "inputs": {
            "model": str(out / "FLUX.1-dev"),
            "prompts": {"train": str(out / "hpdv2" / "train_prompts.txt"), "test": str(out / "hpdv2" / "test_prompts.txt")},
            "rewards": {
                "hpsv21": {"checkpoint": str(hps), "model": str(hps_model)},
                "clip_score": {"checkpoint": str(clip_dir)},
                "pickscore": {"model_dir": str(pick_model), "processor_dir": str(pick_processor)},
                "imagereward": {k: str(v) for k, v in ir.items()},
            },
        },
        # the budget, scaled down: one seed, two iterations of two prompts, groups of 4, 64x64 images,
        # one ablation row per table (the file's ten rows differ only in a method key: its six methods
        # in two settings cost CI the time ten more runs would); training keeps torchrun (2 processes:
        # FSDP2 full fine-tuning on CPU processes) as a cluster does
        "seeds": [0],
        "ablations": {"setting": "hps", "methods": {"egrpo": {"tau": [2.6], "fixed_merge": [6], "active": ["all"]}}},
        "eval": {"sampler": {"sampler": "flux_pipeline", "num_steps": 4, "height": 64, "width": 64, "guidance": 3.5,
                             "batch": 4, "seed": 42},
                 "max_sequence_length": 32, "test_limit": 4},
        "variance": {"limit": 2, "group_size": 4},
        "gpus": {"train": 2, "eval": 1, "per_node": 8},
        "training": {
            "model": {"height": 64, "width": 64, "max_sequence_length": 32, "decode_batch": 8},
            "train": {"iterations": 2, "prompts_per_iteration": 2, "checkpoint_every": 1, "micro_batch": 4,
                      "sample_batch": 64},
            "methods": {
                "egrpo": {"method": {"group_size": 4}},
                "dancegrpo": {"train": {"prompts_per_iteration": 2}, "method": {"group_size": 4, "samples_per_update": 2}},
                "mixgrpo": {"train": {"prompts_per_iteration": 2}, "method": {"group_size": 4, "samples_per_update": 2}},
                "g2rpo": {"train": {"prompts_per_iteration": 2}, "method": {"group_size": 4}},
                "branchgrpo": {"train": {"prompts_per_iteration": 2},
                               "method": {"group_size": 4, "split_points": [0, 3]}},  # 4 leaves
                "tempflow": {"train": {"iterations": 2, "prompts_per_iteration": 2},
                             "method": {"group_size": 4, "samples_per_update": 2}},
            },
        },
    }
    path = out / "overlay.yaml"
    path.write_text("# written by `egrpo stand-ins`: config/flux.yaml on tiny stand-ins, budget scaled down\n"
                    + yaml.safe_dump(overlay, sort_keys=False))
    return path
