"""The paper's metrics on tiny random models of the real architectures, saved in the real checkpoint
formats and loaded through the same code a user runs; each wrapper is checked against a direct
computation with the underlying library."""

import json

import pytest
import torch
from torchvision.transforms.functional import to_pil_image

from egrpo.errors import WeightsMissingError
from egrpo.rewards import build_reward, score

TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
PROMPTS = ["a red circle", "a photo of a dog", "a papaya fruit dressed as a sailor"]


def _images(n=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def _pil(images):
    return [to_pil_image((im.clamp(0, 1) * 255).round().to(torch.uint8)) for im in images]


@pytest.fixture(scope="module")
def tiny_hps(tmp_path_factory):
    from hpsv2.src.open_clip import create_model_and_transforms
    from hpsv2.src.open_clip.factory import add_model_config

    d = tmp_path_factory.mktemp("hps")
    (d / "tiny-hps.json").write_text(json.dumps(TINY_OPEN_CLIP))
    add_model_config(d)
    torch.manual_seed(0)
    model, _, _ = create_model_and_transforms("tiny-hps", None, output_dict=True)
    torch.save({"state_dict": model.state_dict()}, d / "HPS_v2.1_compressed.pt")
    return d / "HPS_v2.1_compressed.pt"


def test_hps_wrapper_matches_hpsv2(tiny_hps):
    from hpsv2.src.open_clip import create_model_and_transforms, get_tokenizer

    fn = build_reward("hpsv21", {"checkpoint": str(tiny_hps), "model": "tiny-hps"})
    images = _images()
    got = score(fn, "hpsv21", images, PROMPTS)
    model, _, preprocess = create_model_and_transforms("tiny-hps", None, output_dict=True)
    model.load_state_dict(torch.load(tiny_hps, weights_only=False)["state_dict"])
    model.eval()
    with torch.no_grad():
        out = model(torch.stack([preprocess(p) for p in _pil(images)]), get_tokenizer("tiny-hps")(PROMPTS))
    want = torch.diagonal(out["image_features"] @ out["text_features"].T)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert got.std() > 0


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    import open_clip

    d = tmp_path_factory.mktemp("clip")
    (d / "tiny-clip.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(d)
    torch.manual_seed(1)
    model = open_clip.create_model("tiny-clip")
    torch.save(model.state_dict(), d / "open_clip_pytorch_model.bin")
    return d / "open_clip_pytorch_model.bin"


def test_clip_score_wrapper_matches_open_clip(tiny_open_clip):
    import open_clip

    fn = build_reward("clip_score", {"model": "tiny-clip", "checkpoint": str(tiny_open_clip)})
    images = _images(seed=1)
    got = score(fn, "clip_score", images, PROMPTS)
    model, _, preprocess = open_clip.create_model_and_transforms("tiny-clip", pretrained=str(tiny_open_clip))
    model.eval()
    with torch.no_grad():
        img = model.encode_image(torch.stack([preprocess(p) for p in _pil(images)]), normalize=True)
        txt = model.encode_text(open_clip.get_tokenizer("tiny-clip")(PROMPTS), normalize=True)
    torch.testing.assert_close(got, (img * txt).sum(-1), atol=1e-5, rtol=1e-4)


def _clip_tokenizer_dir(path):
    """A CLIPTokenizer derived exactly from open_clip's shipped BPE vocabulary (no hub)."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    bpe = SimpleTokenizer()
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(bpe.encoder))
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    return CLIPTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def tiny_pickscore(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    d = tmp_path_factory.mktemp("pick")
    tok = _clip_tokenizer_dir(d / "tok")
    torch.manual_seed(2)
    model = CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, eos_token_id=tok.eos_token_id,
                         bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(image_size=224, patch_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2),
        projection_dim=16))
    model.save_pretrained(d / "PickScore_v1")
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tok).save_pretrained(d / "processor")
    return d


def test_pickscore_wrapper_matches_transformers(tiny_pickscore):
    from transformers import AutoProcessor, CLIPModel

    d = tiny_pickscore
    fn = build_reward("pickscore", {"model_dir": str(d / "PickScore_v1"), "processor_dir": str(d / "processor")})
    images = _images(seed=2)
    got = score(fn, "pickscore", images, PROMPTS)
    model = CLIPModel.from_pretrained(d / "PickScore_v1").eval()
    proc = AutoProcessor.from_pretrained(d / "processor")
    inp = proc(images=_pil(images), text=PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        img = model.visual_projection(model.vision_model(pixel_values=inp["pixel_values"]).pooler_output)
        txt = model.text_projection(model.text_model(input_ids=inp["input_ids"],
                                                     attention_mask=inp["attention_mask"]).pooler_output)
    cos = torch.nn.functional.cosine_similarity(img, txt)
    torch.testing.assert_close(got, model.logit_scale.exp() * cos / 100, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name,options,key", [
    ("hpsv21", {}, "checkpoint"),
    ("hpsv21", {"checkpoint": "/nonexistent/HPS_v2.1_compressed.pt"}, "/nonexistent/HPS_v2.1_compressed.pt"),
    ("clip_score", {"model": "ViT-H-14"}, "checkpoint"),
    ("pickscore", {"model_dir": "/nope/PickScore_v1", "processor_dir": "/nope/p"}, "/nope/PickScore_v1"),
])
def test_missing_weights_name_the_key_and_source(name, options, key):
    with pytest.raises(WeightsMissingError, match=key) as err:
        build_reward(name, options)
    assert "hub" in str(err.value) or "Hugging Face" in str(err.value) or "laion" in str(err.value)


def test_failing_reward_raises_never_defaults():
    from egrpo.errors import NonFiniteRewardError

    with pytest.raises(NonFiniteRewardError):
        score(lambda im, p: torch.full((len(p),), float("nan")), "broken", _images(), PROMPTS)
    with pytest.raises(ValueError, match="shape"):
        score(lambda im, p: torch.zeros(1), "short", _images(), PROMPTS)


@pytest.fixture(scope="module")
def tiny_imagereward(tmp_path_factory):
    """ImageReward's real classes (BLIP ViT + BERT with cross-attention + MLP), a 1-layer text encoder
    (hidden size must stay 768: the head hard-codes it) and a tiny ViT, saved as ImageReward.pt."""
    from egrpo.rewards.imagereward import install_compat

    install_compat()
    from ImageReward.models.BLIP import blip_pretrain
    from ImageReward.models.BLIP.vit import VisionTransformer

    d = tmp_path_factory.mktemp("ir")
    words = sorted({w for p in PROMPTS for w in p.lower().split()})
    (d / "bert").mkdir()
    (d / "bert" / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    (d / "med_config.json").write_text(json.dumps({
        "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.0, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 128,
        "layer_norm_eps": 1e-12, "max_position_embeddings": 64, "model_type": "bert", "num_attention_heads": 12,
        "num_hidden_layers": 1, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 64, "encoder_width": 64,
        "add_cross_attention": True}))
    tiny_vit = lambda *a, **k: (VisionTransformer(img_size=224, patch_size=32, embed_dim=64, depth=1, num_heads=2), 64)  # noqa: E731
    saved = blip_pretrain.create_vit
    blip_pretrain.create_vit = tiny_vit
    from egrpo.rewards.imagereward import _local_tokenizer

    blip_pretrain.init_tokenizer = _local_tokenizer(str(d / "bert"))
    from ImageReward.ImageReward import ImageReward

    torch.manual_seed(3)
    model = ImageReward(med_config=str(d / "med_config.json"))
    for p in model.mlp.parameters():  # the untrained head is nearly constant; spread it for the check
        torch.nn.init.normal_(p, std=0.5)
    torch.save(model.state_dict(), d / "ImageReward.pt")
    yield d
    blip_pretrain.create_vit = saved


def test_imagereward_wrapper_matches_package_score(tiny_imagereward):
    d = tiny_imagereward
    fn = build_reward("imagereward", {"checkpoint": str(d / "ImageReward.pt"), "med_config": str(d / "med_config.json"),
                                      "tokenizer_dir": str(d / "bert")})
    images = _images(seed=3)
    got = score(fn, "imagereward", images, PROMPTS)
    from egrpo.rewards.imagereward import load_image_reward

    model = load_image_reward(str(d / "ImageReward.pt"), str(d / "med_config.json"), str(d / "bert"))
    want = torch.tensor([model.score(p, im) for p, im in zip(PROMPTS, _pil(images))], dtype=torch.float32)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert got.std() > 1e-3
