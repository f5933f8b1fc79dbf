"""The paper's metrics on tiny random models of the real architectures (egrpo.standins), saved in the
real checkpoint formats and loaded through the same code a user runs; each wrapper is checked against
a direct computation with the underlying library."""

import json

import pytest
import torch
from torchvision.transforms.functional import to_pil_image

from egrpo import standins
from egrpo.errors import ConfigError, WeightsMissingError
from egrpo.rewards import build_reward, score

PROMPTS = ["a red circle", "a photo of a dog", "a papaya fruit dressed as a sailor"]


def _images(n=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def _pil(images):
    return [to_pil_image((im.clamp(0, 1) * 255).round().to(torch.uint8)) for im in images]


@pytest.fixture(scope="module")
def tiny_hps(tmp_path_factory):
    return standins.write_hps(tmp_path_factory.mktemp("hps"))


def test_hps_wrapper_matches_hpsv2(tiny_hps):
    from hpsv2.src.open_clip import create_model_and_transforms, get_tokenizer

    ckpt, config = tiny_hps
    fn = build_reward("hpsv21", {"checkpoint": str(ckpt), "model": str(config)})
    images = _images()
    got = score(fn, "hpsv21", images, PROMPTS)
    model, _, preprocess = create_model_and_transforms("hps-tiny", None, output_dict=True)
    model.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
    model.eval()
    with torch.no_grad():
        out = model(torch.stack([preprocess(p) for p in _pil(images)]), get_tokenizer("hps-tiny")(PROMPTS))
    want = torch.diagonal(out["image_features"] @ out["text_features"].T)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert got.std() > 0


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    return standins.write_open_clip_dir(tmp_path_factory.mktemp("clip") / "DFN5B-CLIP-ViT-H-14-378")


def test_clip_score_wrapper_matches_open_clip(tiny_clip_dir):
    import open_clip

    fn = build_reward("clip_score", {"checkpoint": str(tiny_clip_dir)})
    images = _images(seed=1)
    got = score(fn, "clip_score", images, PROMPTS)
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_clip_dir}")
    model.eval()
    with torch.no_grad():
        img = model.encode_image(torch.stack([preprocess(p) for p in _pil(images)]), normalize=True)
        txt = model.encode_text(open_clip.get_tokenizer(f"local-dir:{tiny_clip_dir}")(PROMPTS), normalize=True)
    torch.testing.assert_close(got, (img * txt).sum(-1), atol=1e-5, rtol=1e-4)


def test_a_clip_checkpoint_of_another_geometry_is_refused(tiny_clip_dir, tmp_path):
    """open_clip would silently resize the position embedding of a 64-px checkpoint to a 96-px config
    (another metric than the checkpoint's, no error): the wrapper names the pair instead."""
    weights = tiny_clip_dir / "open_clip_pytorch_model.bin"
    other = standins.tiny_open_clip_config(tmp_path, "clip-96px", image_size=96)
    with pytest.raises(ConfigError, match="64 px"):
        build_reward("clip_score", {"checkpoint": str(weights), "model": str(other)})
    same = standins.tiny_open_clip_config(tmp_path, "clip-64px")
    cfg = json.loads((tiny_clip_dir / "open_clip_config.json").read_text())["model_cfg"]
    json.dump(cfg, open(same, "w"))
    build_reward("clip_score", {"checkpoint": str(weights), "model": str(same)})  # its own config: fine
    with pytest.raises(ConfigError, match="is not the model of"):
        build_reward("clip_score", {"checkpoint": str(tiny_clip_dir), "model": str(other)})


@pytest.fixture(scope="module")
def tiny_pickscore(tmp_path_factory):
    d = tmp_path_factory.mktemp("pick")
    return standins.write_pickscore(d / "PickScore_v1", d / "processor")


def test_pickscore_wrapper_matches_transformers(tiny_pickscore):
    from transformers import AutoProcessor, CLIPModel

    model_dir, processor_dir = tiny_pickscore
    fn = build_reward("pickscore", {"model_dir": str(model_dir), "processor_dir": str(processor_dir)})
    images = _images(seed=2)
    got = score(fn, "pickscore", images, PROMPTS)
    model = CLIPModel.from_pretrained(model_dir).eval()
    proc = AutoProcessor.from_pretrained(processor_dir)
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
    assert f"inputs.rewards.{name}." in str(err.value) and "Hugging Face" in str(err.value)


def test_failing_reward_raises_never_defaults():
    from egrpo.errors import NonFiniteRewardError

    with pytest.raises(NonFiniteRewardError):
        score(lambda im, p: torch.full((len(p),), float("nan")), "broken", _images(), PROMPTS)
    with pytest.raises(ValueError, match="shape"):
        score(lambda im, p: torch.zeros(1), "short", _images(), PROMPTS)


@pytest.fixture(scope="module")
def tiny_imagereward(tmp_path_factory):
    """ImageReward's real classes (BLIP ViT + BERT with cross-attention + MLP) at tiny size, saved as
    ImageReward.pt; the loader reads the ViT's size off the checkpoint."""
    d = tmp_path_factory.mktemp("ir")
    return standins.write_image_reward(d / "ImageReward", d / "bert", [w for p in PROMPTS for w in p.lower().split()])


def test_imagereward_wrapper_matches_package_score(tiny_imagereward):
    files = {k: str(v) for k, v in tiny_imagereward.items()}
    fn = build_reward("imagereward", files)
    images = _images(seed=3)
    got = score(fn, "imagereward", images, PROMPTS)
    from egrpo.rewards.imagereward import load_image_reward

    model = load_image_reward(files["checkpoint"], files["med_config"], files["tokenizer_dir"])
    want = torch.tensor([model.score(p, im) for p, im in zip(PROMPTS, _pil(images))], dtype=torch.float32)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert got.std() > 1e-3


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_a_precision_is_a_weight_dtype_and_an_autocast():
    """fp32: fp32 weights and arithmetic; amp: fp32 weights under fp16 autocast on a GPU (the releases'
    torch.amp.autocast('cuda'), which leaves CPU tensors in fp32); bf16: bf16 weights and arithmetic."""
    from egrpo.rewards.images import reward_precision

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert reward_precision({}, cuda) == reward_precision({"precision": "fp32"}, cuda)  # unset: fp32
    amp = reward_precision({"precision": "amp"}, cuda)
    assert (amp.weights, amp.autocast, amp.compute) == (torch.float32, torch.float16, torch.float16)
    ctx = amp.context()
    assert isinstance(ctx, torch.autocast) and ctx.device == "cuda" and ctx.fast_dtype == torch.float16
    assert reward_precision({"precision": "amp"}, cpu).compute == torch.float32
    for device in (cpu, cuda):
        bf16 = reward_precision({"precision": "bf16"}, device)
        assert (bf16.weights, bf16.autocast) == (torch.bfloat16, None)
    with pytest.raises(ConfigError, match="precision"):
        reward_precision({"precision": "half"}, cpu)


def test_rewards_score_in_chunks():
    sizes = []

    def counting(images, prompts):
        sizes.append(len(images))
        return images.mean(dim=(1, 2, 3))

    out = score(counting, "brightness", _images(n=5), ["p"] * 5, batch=2)
    assert sizes == [2, 2, 1] and out.shape == (5,)


@pytest.fixture(scope="module")
def tiny_rewards(tiny_hps, tiny_clip_dir, tiny_pickscore, tiny_imagereward):
    """reward -> options of the four stand-ins."""
    return {"hpsv21": {"checkpoint": str(tiny_hps[0]), "model": str(tiny_hps[1])},
            "clip_score": {"checkpoint": str(tiny_clip_dir)},
            "pickscore": {"model_dir": str(tiny_pickscore[0]), "processor_dir": str(tiny_pickscore[1])},
            "imagereward": {k: str(v) for k, v in tiny_imagereward.items()}}


def _linear_dtypes(fn, images, prompts):
    """Score, recording (weight dtype, output dtype) of every nn.Linear the scorer runs."""
    seen = []

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Linear) and isinstance(output, torch.Tensor):
            seen.append((module.weight.dtype, output.dtype))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        out = score(fn, "reward", images, prompts)
    finally:
        handle.remove()
    assert seen, "the scorer ran no nn.Linear"
    return out, set(seen)


@pytest.mark.parametrize("name", ["hpsv21", "clip_score", "pickscore", "imagereward"])
def test_each_precision_reaches_the_scorer(tiny_rewards, name, monkeypatch):
    """The precision set for a reward is what its model's weights are stored in and what its matrix
    products run in; amp's autocast wraps the whole score (shown with CPU autocast, this machine having
    no GPU: the same context object the GPU gets, on the CPU's device type)."""
    from egrpo.rewards.images import Precision

    images = _images(seed=5)
    fp32, seen = _linear_dtypes(build_reward(name, {**tiny_rewards[name], "precision": "fp32"}), images, PROMPTS)
    assert seen == {(torch.float32, torch.float32)}
    bf16, seen = _linear_dtypes(build_reward(name, {**tiny_rewards[name], "precision": "bf16"}), images, PROMPTS)
    assert seen == {(torch.bfloat16, torch.bfloat16)}
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    assert not torch.equal(bf16, fp32) and torch.allclose(bf16, fp32, atol=0.1, rtol=0.1)
    amp, seen = _linear_dtypes(build_reward(name, {**tiny_rewards[name], "precision": "amp"}), images, PROMPTS)
    assert seen == {(torch.float32, torch.float32)} and torch.equal(amp, fp32)  # the CPU: fp32, as the releases
    # amp on a GPU: fp32 weights, products under the autocast context (here CPU's, bf16)
    monkeypatch.setattr(Precision, "context", lambda self: torch.autocast("cpu", dtype=torch.bfloat16)
                        if self.name == "amp" else __import__("contextlib").nullcontext())
    _, seen = _linear_dtypes(build_reward(name, {**tiny_rewards[name], "precision": "amp"}), images, PROMPTS)
    assert seen == {(torch.float32, torch.bfloat16)}
