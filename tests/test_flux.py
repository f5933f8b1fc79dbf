import shutil

import pytest
import torch

from egrpo.flux import FluxBackbone, WeightsMissingError, check_flux_dir


def test_round_trip_loads_real_classes(backbone):
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5EncoderModel

    assert isinstance(backbone.transformer, FluxTransformer2DModel)
    assert isinstance(backbone.pipe.vae, AutoencoderKL)
    assert isinstance(backbone.pipe.text_encoder, CLIPTextModel)
    assert isinstance(backbone.pipe.text_encoder_2, T5EncoderModel)
    assert backbone.dtype == torch.float32  # 'auto' on CPU


def test_saved_weights_equal_built_weights(tiny_flux_dir, backbone):
    from egrpo.tiny_flux import TinyFluxSpec, build_tiny_flux

    built = build_tiny_flux(TinyFluxSpec())
    for (n, a), (_, b) in zip(built.transformer.state_dict().items(), backbone.transformer.state_dict().items()):
        torch.testing.assert_close(a, b, msg=n)


def test_encode_pack_velocity_decode_shapes(backbone):
    e = backbone.encode_prompts(["a red circle", "two blue squares on the left"])
    assert e.prompt.shape[:2] == (2, 16) and e.pooled.shape == (2, 32)
    n, c = backbone.packed_shape(64, 64)
    assert (n, c) == (64, 32)  # 64 px / 4 (VAE) / 2 (packing) = 8x8 tokens of 4*8 channels
    x = torch.randn(2, n, c)
    torch.testing.assert_close(backbone.pack(backbone.unpack(x, 64, 64)), x)
    v = backbone.velocity(x, 0.8, e, 64, 64)
    assert v.shape == x.shape and v.dtype == torch.float32
    img = backbone.decode(x, 64, 64)
    assert img.shape == (2, 3, 64, 64) and img.min() >= 0 and img.max() <= 1


def test_decode_in_chunks_equals_one_call(backbone, monkeypatch):
    x = torch.randn(7, *backbone.packed_shape(32, 32))
    monkeypatch.setattr(backbone, "decode_batch", None)
    whole = backbone.decode(x, 32, 32)
    monkeypatch.setattr(backbone, "decode_batch", 3)  # chunks of 3, 3 and 1
    torch.testing.assert_close(backbone.decode(x, 32, 32), whole)


def test_prompt_and_guidance_change_velocity(backbone):
    e = backbone.encode_prompts(["a red circle", "a blue square"])
    x = torch.randn(1, *backbone.packed_shape(64, 64)).expand(2, -1, -1)
    v = backbone.velocity(x, 0.5, e, 64, 64)
    assert not torch.allclose(v[0], v[1])
    g0 = backbone.guidance
    try:
        backbone.guidance = 1.0
        v2 = backbone.velocity(x, 0.5, e, 64, 64)
    finally:
        backbone.guidance = g0
    assert not torch.allclose(v, v2)


def test_velocity_uses_quantised_timestep(backbone):
    e = backbone.encode_prompts(["a cat"])
    x = torch.randn(1, *backbone.packed_shape(64, 64))
    torch.testing.assert_close(backbone.velocity(x, 0.8004, e, 64, 64), backbone.velocity(x, 0.8009, e, 64, 64))


def test_lora_and_full_trainable_parameters(tiny_flux_dir):
    full = FluxBackbone.from_pretrained(tiny_flux_dir).enable_training()
    n_full = sum(p.numel() for p in full.trainable_parameters())
    assert n_full == sum(p.numel() for p in full.transformer.parameters())
    lora = FluxBackbone.from_pretrained(tiny_flux_dir).enable_training(lora_rank=4, gradient_checkpointing=True)
    params = lora.trainable_parameters()
    assert 0 < sum(p.numel() for p in params) < n_full
    assert lora.transformer.is_gradient_checkpointing
    # gradients flow into the LoRA weights only
    e = lora.encode_prompts(["a cat"])
    x = torch.randn(2, *lora.packed_shape(64, 64))
    lora.velocity(x, 0.5, e, 64, 64).square().mean().backward()
    assert all(p.grad is not None for p in params)
    assert all(p.grad is None for p in lora.transformer.parameters() if not p.requires_grad)


def test_lora_on_a_bf16_base_keeps_it_bf16_and_trains_fp32_adapters(tiny_flux_dir):
    """LoRA on FLUX.1-dev: the frozen 12B base stays in bf16 (half the memory of fp32 master
    weights); the adapters are fp32 and get fp32 gradients. Full fine-tuning gets fp32 weights."""
    lora = FluxBackbone.from_pretrained(tiny_flux_dir, dtype="bf16").enable_training(lora_rank=4)
    dtypes = {("lora_" in n, p.dtype) for n, p in lora.transformer.named_parameters()}
    assert dtypes == {(False, torch.bfloat16), (True, torch.float32)}
    e = lora.encode_prompts(["a cat"])
    lora.velocity(torch.randn(2, *lora.packed_shape(64, 64)), 0.5, e, 64, 64).square().mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in lora.trainable_parameters())
    full = FluxBackbone.from_pretrained(tiny_flux_dir, dtype="bf16").enable_training()
    assert {p.dtype for p in full.trainable_parameters()} == {torch.float32}


def test_missing_directory_error_names_path(tmp_path):
    with pytest.raises(WeightsMissingError, match=str(tmp_path / "nope")) as err:
        FluxBackbone.from_pretrained(tmp_path / "nope")
    assert "model.path" in str(err.value)


def test_incomplete_directory_names_missing_parts(tiny_flux_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_flux_dir, broken)
    (broken / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    shutil.rmtree(broken / "tokenizer_2")
    with pytest.raises(WeightsMissingError) as err:
        check_flux_dir(broken)
    msg = str(err.value)
    assert "transformer/diffusion_pytorch_model.safetensors" in msg and "tokenizer_2/" in msg
    assert "vae" not in msg.split("missing:")[1].split(".")[0]


def test_velocity_keeps_no_autocast_weight_cache(backbone, monkeypatch):
    """Under autocast, fp32 master weights' bf16 casts would be cached until the whole forward ends (a
    bf16 copy of the transformer): the backbone turns the cache off."""
    seen = []
    real = torch.autocast

    def recording(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "autocast", recording)
    e = backbone.encode_prompts(["a cat"])
    backbone.velocity(torch.randn(1, *backbone.packed_shape(64, 64)), 0.5, e, 64, 64)
    assert seen and seen[-1].get("cache_enabled") is False


def test_text_encoders_leave_the_gpu_once_prompts_are_encoded(tiny_flux_dir, monkeypatch):
    """T5-XXL is 9 GB: after the run's prompts are encoded it moves to the CPU (a CUDA device mocked)."""
    bb = FluxBackbone.from_pretrained(tiny_flux_dir)
    moved = []
    for name in ("text_encoder", "text_encoder_2"):
        monkeypatch.setattr(getattr(bb.pipe, name), "to", lambda device, name=name: moved.append((name, device)))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    bb.offload_text_encoders()
    assert moved == []  # on the CPU nothing to move
    bb.device = torch.device("cuda", 0)
    bb.offload_text_encoders()
    assert moved == [("text_encoder", "cpu"), ("text_encoder_2", "cpu")]
