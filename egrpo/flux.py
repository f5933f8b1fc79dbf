"""The FLUX backbone: loads any diffusers Flux-format directory and exposes v_theta(x, sigma, c).

FLUX.1-dev from a local path and the tiny pipelines of `egrpo.tiny_flux` go through the same code.
Latents live in FLUX's packed token space [B, N, 4*C] (2x2 patches) throughout sampling and
training; `unpack`/`decode` turn them into images only at the end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .config import GUIDANCE, MAX_SEQUENCE_LENGTH
from .errors import WeightsMissingError
from .schedule import quantized_timestep

FLUX_DEV_HINT = (
    "FLUX.1-dev is gated on the Hugging Face hub: accept its licence, then on a machine with network "
    "access run `huggingface-cli download black-forest-labs/FLUX.1-dev --local-dir DIR` and point "
    "`model.path` at DIR"
)

# component folder -> files that must exist in it (any one of each tuple)
_REQUIRED = {
    "transformer": (("config.json",), ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.bin")),
    "vae": (("config.json",), ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")),
    "text_encoder": (("config.json",), ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")),
    "text_encoder_2": (("config.json",), ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")),
    "tokenizer": (("tokenizer.json", "vocab.json"),),
    "tokenizer_2": (("tokenizer.json", "spiece.model"),),
    "scheduler": (("scheduler_config.json",),),
}

# LoRA targets: attention projections of both stream types and the single blocks' MLP (as the
# DanceGRPO/flow_grpo FLUX LoRA configs do).
DEFAULT_LORA_TARGETS = (
    "to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
    "proj_mlp", "proj_out",
)
DECODE_BATCH = 16  # images per VAE decode call (ModelConfig.decode_batch has the same default)


def add_lora(transformer: torch.nn.Module, rank: int, alpha: float | None = None,
             targets: Sequence[str] = DEFAULT_LORA_TARGETS, init_seed: int | None = None) -> list[torch.nn.Parameter]:
    """Attach a peft LoRA (Gaussian init, alpha defaults to the rank) and make only it trainable, in
    fp32 on the frozen base in the base's own dtype; returns the adapter parameters."""
    from peft import LoraConfig

    # peft draws the Gaussian LoRA A matrices from the global CPU RNG: without a seed of its own a
    # run's init would depend on whatever ran before it in the process (the global RNG is restored)
    with torch.random.fork_rng(devices=[]):
        if init_seed is not None:
            torch.random.default_generator.manual_seed(init_seed)
        transformer.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian",
                                           target_modules=list(targets)))
    adapters = []
    for name, p in transformer.named_parameters():
        p.requires_grad_("lora_" in name)
        if "lora_" in name:
            p.data = p.data.float()
            adapters.append(p)
    return adapters


def check_flux_dir(path: str | Path, hint: str = FLUX_DEV_HINT) -> Path:
    """Raise WeightsMissingError naming every missing part of a Flux-format directory."""
    path = Path(path)
    if not path.is_dir():
        raise WeightsMissingError(f"Flux weight directory {path} does not exist. {hint}")
    missing = [] if (path / "model_index.json").is_file() else ["model_index.json"]
    for folder, groups in _REQUIRED.items():
        for names in groups:
            if not any((path / folder / n).is_file() for n in names):
                missing.append(f"{folder}/{' or '.join(names)}")
    if missing:
        raise WeightsMissingError(f"Flux weight directory {path} is incomplete; missing: {', '.join(missing)}. {hint}")
    return path


def image_multiple(path: str | Path) -> int | None:
    """What an image side must be a multiple of for the Flux-format model at `path`, read from its VAE's
    config before anything loads: the VAE downsamples by 2^(blocks - 1) (8 for FLUX.1-dev) and FLUX
    packs 2x2 latent patches into a token, so FluxPipeline's vae_scale_factor * 2 (16 for FLUX.1-dev;
    FluxPipeline itself would silently resize any other size). None when the config cannot be read
    (the loader then names the problem)."""
    try:
        blocks = json.loads((Path(path) / "vae" / "config.json").read_text())["block_out_channels"]
        return 2 ** (len(blocks) - 1) * 2
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_image_size(path: str | Path, height: int, width: int, key: str) -> None:
    """A ConfigError naming `key`.height or .width when the model at `path` cannot make that image size."""
    from .errors import ConfigError

    m = image_multiple(path)
    for name, side in (("height", height), ("width", width)):
        if m and side % m:
            raise ConfigError(f"{key}.{name}: {side} px is not a multiple of {m}, which the model {path} needs (its "
                              f"VAE downsamples by {m // 2}, FLUX packs 2x2 latent patches): use {max(m, side // m * m)} "
                              f"or {side // m * m + m}")


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """'auto' = bf16 on CUDA, fp32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
            "fp16": torch.float16, "float16": torch.float16}[dtype]


@dataclass(frozen=True)
class PromptEmbeds:
    """FLUX conditioning: T5 sequence [B, L, D], CLIP pooled [B, P], text position ids [L, 3]."""

    prompt: torch.Tensor
    pooled: torch.Tensor
    text_ids: torch.Tensor

    def __len__(self) -> int:
        return self.prompt.shape[0]

    def select(self, index: torch.Tensor | Sequence[int]) -> "PromptEmbeds":
        """Rows `index` (e.g. repeat one prompt G times with [k]*G)."""
        index = torch.as_tensor(index, device=self.prompt.device)
        return PromptEmbeds(self.prompt[index], self.pooled[index], self.text_ids)

    def to(self, device) -> "PromptEmbeds":
        return PromptEmbeds(self.prompt.to(device), self.pooled.to(device), self.text_ids.to(device))


class FluxBackbone:
    """diffusers' FluxPipeline components behind four calls: encode, velocity, decode, parameters.

    The transformer is kept in fp32 when trained (master weights) and run under bf16 autocast on
    GPU; frozen parts (VAE, text encoders) are stored in `dtype`.
    """

    def __init__(self, pipe, *, device: str | torch.device = "cpu", dtype: str | torch.dtype = "auto",
                 guidance: float = GUIDANCE, max_sequence_length: int = MAX_SEQUENCE_LENGTH, decode_batch: int | None = DECODE_BATCH):
        self.pipe = pipe
        self.decode_batch = decode_batch
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.guidance = guidance
        self.max_sequence_length = min(max_sequence_length, pipe.tokenizer_2.model_max_length)
        for name in ("vae", "text_encoder", "text_encoder_2", "transformer"):
            module = getattr(pipe, name)
            if module is None:  # a transformer built elsewhere (egrpo.startup), attached later
                continue
            module.requires_grad_(False).eval()
            if module.dtype != self.dtype:
                module.to(dtype=self.dtype)
            module.to(self.device)
        self._img_ids: dict[tuple[int, int], torch.Tensor] = {}
        self.passes = 0  # transformer passes, counted per sample row (the compute accounting)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device="cpu", dtype="auto", guidance=GUIDANCE,
                        max_sequence_length=MAX_SEQUENCE_LENGTH, decode_batch: int | None = DECODE_BATCH,
                        hint: str = FLUX_DEV_HINT, transformer: bool | torch.nn.Module = True) -> "FluxBackbone":
        """Load a diffusers Flux-format directory (FLUX.1-dev or a tiny one) with diffusers' classes.
        `transformer`: False leaves it out (`attach` one later), a module is used instead of the
        directory's own (a trained export)."""
        from diffusers import FluxPipeline

        path = check_flux_dir(path, hint)
        with open(path / "model_index.json") as f:
            if json.load(f).get("_class_name") not in ("FluxPipeline", None):
                raise WeightsMissingError(f"{path}/model_index.json does not describe a FluxPipeline. {hint}")
        try:
            given = {} if transformer is True else {"transformer": transformer or None}
            pipe = FluxPipeline.from_pretrained(path, dtype=resolve_dtype(dtype, torch.device(device)), **given)
        except (OSError, ValueError, KeyError, RuntimeError) as e:  # corrupt config.json or weights file
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WeightsMissingError(f"Flux weight directory {path} cannot be loaded ({first[:300]}). {hint}") from None
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, device=device, dtype=dtype, guidance=guidance, max_sequence_length=max_sequence_length,
                   decode_batch=decode_batch)

    # ---- components -------------------------------------------------------------------------
    @property
    def transformer(self) -> torch.nn.Module:
        return self.pipe.transformer

    def attach(self, transformer: torch.nn.Module) -> None:
        """Use a transformer built apart from the pipeline (start-up sharded: egrpo.startup)."""
        self.pipe.transformer = transformer

    @property
    def vae_scale_factor(self) -> int:
        return self.pipe.vae_scale_factor

    @property
    def latent_channels(self) -> int:
        return self.pipe.vae.config.latent_channels

    # ---- text -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> PromptEmbeds:
        """Encode once (T5 sequence + CLIP pooled) with FluxPipeline's own encode_prompt."""
        prompt, pooled, text_ids = self.pipe.encode_prompt(
            list(prompts), prompt_2=None, device=self.device, max_sequence_length=self.max_sequence_length
        )
        return PromptEmbeds(prompt, pooled, text_ids)

    def offload_text_encoders(self) -> None:
        """Move the text encoders off the GPU once the prompts are encoded (T5-XXL alone is 9 GB)."""
        if self.device.type == "cuda":
            for name in ("text_encoder", "text_encoder_2"):
                getattr(self.pipe, name).to("cpu")
            torch.cuda.empty_cache()

    # ---- latents ----------------------------------------------------------------------------
    def latent_grid(self, height: int, width: int) -> tuple[int, int]:
        """Unpacked latent (h, w) for an image size, as FluxPipeline.prepare_latents computes it."""
        s = self.vae_scale_factor * 2
        if height % s or width % s:
            raise ValueError(f"height and width must be multiples of {s}, got {height}x{width}")
        return 2 * (height // s), 2 * (width // s)

    def packed_shape(self, height: int, width: int) -> tuple[int, int]:
        """(tokens, channels) of packed latents for an image size."""
        h, w = self.latent_grid(height, width)
        return (h // 2) * (w // 2), 4 * self.latent_channels

    def pack(self, latents: torch.Tensor) -> torch.Tensor:
        b, c, h, w = latents.shape
        return self.pipe._pack_latents(latents, b, c, h, w)

    def unpack(self, packed: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.pipe._unpack_latents(packed, height, width, self.vae_scale_factor)

    def img_ids(self, height: int, width: int) -> torch.Tensor:
        key = (height, width)
        if key not in self._img_ids:
            h, w = self.latent_grid(height, width)
            self._img_ids[key] = self.pipe._prepare_latent_image_ids(1, h // 2, w // 2, self.device, self.dtype)
        return self._img_ids[key]

    # ---- the network ------------------------------------------------------------------------
    def velocity(self, x: torch.Tensor, sigma: torch.Tensor | float, embeds: PromptEmbeds,
                 height: int, width: int, module: torch.nn.Module | None = None) -> torch.Tensor:
        """v_theta(x, sigma, c) in fp32 for packed latents x [B, N, 4C]; embeds has B rows or 1.

        `module` runs the forward instead of the bare transformer (its DDP/FSDP-wrapped self).
        """
        b = x.shape[0]
        self.passes += b
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        t = quantized_timestep(sigma).to(self.device).expand(b)  # int(sigma*1000)/1000, as the references
        guidance = (torch.full((b,), self.guidance, device=self.device)
                    if self.transformer.config.guidance_embeds else None)
        prompt, pooled = embeds.prompt, embeds.pooled
        if prompt.shape[0] != b:
            prompt, pooled = prompt.expand(b, -1, -1), pooled.expand(b, -1)
        # not ModelMixin.dtype: it walks every module on each call (3% of a world iteration)
        param_dtype = next(self.transformer.parameters()).dtype
        autocast = self.device.type == "cuda" and self.dtype != torch.float32
        # no cast cache: each weight is used once per forward, and the cache would hold a bf16 copy of
        # every fp32 master weight until the whole forward ends (FSDP computes in bf16 by itself)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=autocast, cache_enabled=False):
            out = (module or self.transformer)(
                hidden_states=x.to(param_dtype), timestep=t.to(param_dtype), guidance=guidance,
                pooled_projections=pooled.to(param_dtype), encoder_hidden_states=prompt.to(param_dtype),
                txt_ids=embeds.text_ids, img_ids=self.img_ids(height, width), return_dict=False,
            )[0]
        return out.float()

    @torch.no_grad()
    def decode(self, packed: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Packed latents -> images [B, 3, H, W] in [0, 1] (fp32), `decode_batch` images per VAE call.

        Chunking bounds the decoder's activation memory and keeps a CPU's working set in cache
        (benchmarks/README.md has the measurement)."""
        vae = self.pipe.vae
        latents = self.unpack(packed.to(self.dtype), height, width)
        latents = latents / vae.config.scaling_factor + vae.config.shift_factor
        step = self.decode_batch or len(latents)
        images = torch.cat([vae.decode(z, return_dict=False)[0] for z in latents.split(step)])
        return (images.float() / 2 + 0.5).clamp(0, 1)

    # ---- training switches ------------------------------------------------------------------
    def enable_training(self, *, lora_rank: int | None = None, lora_alpha: float | None = None,
                        lora_targets: Sequence[str] = DEFAULT_LORA_TARGETS, gradient_checkpointing: bool = False,
                        init_seed: int | None = None):
        """Make the transformer trainable: full fine-tuning in fp32 master weights, or a peft LoRA in
        fp32 on the frozen base in its own dtype (bf16 on GPU: FLUX.1-dev's 12B base stays at 24 GB
        instead of 48), its random init drawn from `init_seed` (the global RNG is left as it was)."""
        tr = self.transformer
        if lora_rank:
            add_lora(tr, lora_rank, lora_alpha, lora_targets, init_seed)
        else:
            tr.to(dtype=torch.float32).requires_grad_(True)
        if gradient_checkpointing:
            tr.enable_gradient_checkpointing()
        tr.train()
        return self

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.transformer.parameters() if p.requires_grad]
