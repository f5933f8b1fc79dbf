"""Checkpoints and the exported trained weights.

A checkpoint is a sharded `torch.distributed.checkpoint` (DCP) directory of the trainable parameters
and the AdamW state: each rank writes and reads its own shard (a full FLUX.1-dev checkpoint is ~143 GB
of fp32 weights and moments; no rank ever holds it whole), and it resumes at any world size (DCP
reshards). Beside the shards, meta.json records the iteration, the run's config and a sha256 of every
file, verified before a resume. A checkpoint is written to `<dir>.tmp` and swapped in only when
complete, so a crash or a full disk mid-write leaves the previous one intact.

The final trained weights are exported once, gathered on rank 0, in `train.export_dtype` (fp32 master
weights by default, as the releases save theirs). A fully
fine-tuned transformer is written as a diffusers directory, final/transformer/ (config.json and
diffusion_pytorch_model.safetensors), which `FluxTransformer2DModel.from_pretrained` loads on its own;
final/trainable.safetensors is the same file (a hard link: no second copy on disk). A LoRA run's
trainable.safetensors holds its adapters. final/meta.json names the base model (for the VAE, text
encoders and a LoRA's frozen base) by a path relative to final/ and by its absolute path, so that a
results folder moved together with the base model still loads. meta.json also pins the export and
the base model by content (the sha256 of every file evaluation loads, and egrpo.digest's digest of
the base model): evaluation checks both before it loads anything, so a replaced weights file or base
model is an error naming both, never a silently wrong score.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import shutil
import time
from pathlib import Path

import torch

from . import distributed as dist
from .digest import file_digest, model_difference, model_digest, sha256
from .errors import InputError, WeightsMissingError

META = "meta.json"


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(ignore_frozen_params=True, **kw)  # frozen weights come from the base model


def disk_error(e: BaseException, path: Path) -> InputError | None:
    """A one-line error for a full disk or quota while writing `path` (None for other failures); DCP
    wraps each rank's failure in a CheckpointException."""
    stack, seen = [e], set()
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        stack += [e.__cause__, e.__context__] + [f[0] for f in getattr(e, "failures", {}).values()]
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            probe = Path(path)
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent
            usage = shutil.disk_usage(probe)
            return InputError(f"no space left writing {path} (filesystem of {probe}: {usage.free / 2**20:.0f} MiB free "
                              f"of {usage.total / 2**30:.1f} GiB); free space or point the run elsewhere")
    return None


def save(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict) -> dict:
    """Write the sharded checkpoint of the trainable parameters and optimizer state, with meta.json;
    returns its size (all ranks' files) and the seconds the write and the checksums took."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    t0 = time.perf_counter()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if dist.rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # a write that failed before
    dist.barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer, options=_options())
    from torch.distributed.checkpoint.api import CheckpointException  # a BaseException, not an Exception

    error = None
    try:
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    except (Exception, CheckpointException) as e:  # noqa: BLE001 - mapped to a clear message below, or re-raised
        error = disk_error(e, tmp)
        if error is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # the previous checkpoint stays as it was
    dist.raise_together(str(error) if error else None, InputError)
    t1 = time.perf_counter()
    rank = dist.rank()
    mine = {f.name: sha256(f) for f in sorted(tmp.iterdir()) if f.name.startswith(f"__{rank}_")}
    files = dist.all_gather_dict(mine)
    t2 = time.perf_counter()
    if rank == 0:
        files[".metadata"] = sha256(tmp / ".metadata")
        (tmp / META).write_text(json.dumps({**meta, "files": files}, indent=1))
        old = path.with_name(path.name + ".old")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    size = sum(f.stat().st_size for f in path.iterdir()) if rank == 0 else 0
    return {"bytes": size, "write_s": round(t1 - t0, 3), "checksum_s": round(t2 - t1, 3),
            "total_s": round(time.perf_counter() - t0, 3)}


def read_meta(path: Path) -> dict | None:
    """A checkpoint's meta.json; None when there is no checkpoint. An incomplete or foreign one is an
    error naming it."""
    path = Path(path)
    legacy = path.parent / "last.pt"
    if legacy.exists():
        raise InputError(f"{legacy} is a checkpoint of an older harness version, which cannot be resumed; "
                         "delete the run directory to train it afresh")
    if not path.exists():
        return None
    try:
        meta = json.loads((path / META).read_text())
        if not {"iteration", "config", "files"} <= set(meta):
            raise ValueError("keys missing")
    except (OSError, ValueError) as e:
        raise InputError(f"checkpoint {path} is incomplete or corrupt ({path / META}: {e}); delete it to "
                         "restart the run from scratch") from None
    return meta


class _MetadataUnpickler(pickle.Unpickler):
    """DCP stores its index (.metadata) as a pickle: allow only the classes such an index holds, so a
    checkpoint from elsewhere cannot run code when it is loaded."""

    def find_class(self, module, name):
        obj = super().find_class(module, name)
        safe = (module.startswith("torch.distributed.checkpoint.") and isinstance(obj, type)) \
            or (module == "torch" and (name == "Size" or isinstance(obj, torch.dtype))) \
            or (module, name) in {("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"),
                                  ("pathlib", "WindowsPath"), ("collections", "OrderedDict")}
        if not safe:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a checkpoint index")
        return obj


def verify(path: Path, meta: dict) -> None:
    """Check every file of a checkpoint against meta.json (ranks share the work) and that its index
    holds nothing but checkpoint metadata; a one-line error naming the first bad file."""
    path = Path(path)
    names = sorted(meta["files"])
    rank, world = dist.rank(), dist.world()
    bad = None
    for name in names[rank::world]:
        f = path / name
        if not f.is_file():
            bad = f"{f} is missing"
        elif sha256(f) != meta["files"][name]:
            bad = f"{f} does not match its checksum in {path / META} (truncated or corrupt)"
        if bad:
            break
    if bad is None:
        try:
            _MetadataUnpickler(io.BytesIO((path / ".metadata").read_bytes())).load()
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as e:
            bad = f"{path / '.metadata'} is not a checkpoint index ({e})"
    dist.raise_together(f"checkpoint {bad}; delete {path} to restart the run from scratch" if bad else None, InputError)


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Verify, then load a checkpoint into the (wrapped) model and its optimizer, at any world size;
    returns its size and the seconds the verification and the load took."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    t0 = time.perf_counter()
    meta = read_meta(path)
    verify(path, meta)
    t1 = time.perf_counter()
    # on a fresh optimizer get_state_dict materialises zero states for DCP to load into
    model_sd, optim_sd = get_state_dict(model, optimizer, options=_options())
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(path))
    result = set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                            options=_options(strict=False))
    frozen = {n.removeprefix("module.") for n, p in model.named_parameters() if not p.requires_grad}
    missing = [k for k in result.missing_keys if k.removeprefix("module.") not in frozen]
    if missing or result.unexpected_keys:
        raise InputError(f"checkpoint {path} does not fit the model: missing {missing[:3]}, "
                         f"unexpected {list(result.unexpected_keys)[:3]}")
    size = sum((Path(path) / name).stat().st_size for name in meta["files"])
    return {"bytes": size, "verify_s": round(t1 - t0, 3), "load_s": round(time.perf_counter() - t1, 3)}


def full_trainable_state(model: torch.nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The trainable parameters gathered on rank 0 (CPU; {} on other ranks), under the unwrapped
    model's names (no DDP `module.` prefix), floating ones cast to `dtype`."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    sd = get_model_state_dict(model, options=_options(full_state_dict=True, cpu_offload=True))
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    if dist.rank() == 0 and not sd:
        raise RuntimeError("no trainable parameters were gathered for export")
    return sd


EXPORT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TRANSFORMER = "transformer"  # final/transformer/: a diffusers FluxTransformer2DModel directory
WEIGHTS = "diffusion_pytorch_model.safetensors"  # diffusers' file name for a model's weights


def _save(weights: dict, target: Path) -> None:
    """safetensors, written whole then renamed; a full disk is a one-line error."""
    from safetensors.torch import save_file

    tmp = target.with_name(target.name + ".tmp")
    try:
        save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp), metadata={"format": "pt"})
    except Exception as e:  # noqa: BLE001
        error = disk_error(e, target)
        if error is None:
            raise
        raise error from None
    os.replace(tmp, target)


def export_trained(out_dir: Path, weights: dict, base_path: str, lora: dict | None, config: dict | None = None,
                   base_digest: dict | None = None) -> dict:
    """Write the run's trained weights into final/: a full fine-tune as the diffusers directory
    final/transformer/ (`config`, the transformer's config, and the weights) with trainable.safetensors
    a hard link to its weights file; a LoRA's adapters as trainable.safetensors. Then copies of log.jsonl
    and provenance.json, and final/meta.json last (so it marks a complete export): the base model's
    path relative to final/ and absolute, its content digest (egrpo.digest), the LoRA spec or null, the
    sha256 of the weights and of every file evaluation loads. A full disk at any step is one line naming
    the file. Returns the size written and the seconds the write and the checksum took."""
    t0 = time.perf_counter()
    final = Path(out_dir) / "final"
    target = final / "trainable.safetensors"
    writing = final
    try:
        final.mkdir(parents=True, exist_ok=True)
        if lora is None:
            if config is None:
                raise ValueError("a full fine-tune's export needs the transformer's config")
            from diffusers import FluxTransformer2DModel

            folder = final / TRANSFORMER
            writing = folder / "config.json"
            folder.mkdir(exist_ok=True)
            with torch.device("meta"):  # diffusers writes its own config.json (class name, version)
                FluxTransformer2DModel.from_config({k: v for k, v in config.items() if not k.startswith("_")}) \
                    .save_config(folder)
            _save(weights, folder / WEIGHTS)
            writing = target
            target.unlink(missing_ok=True)
            try:
                os.link(folder / WEIGHTS, target)
            except OSError:  # a filesystem without hard links
                shutil.copyfile(folder / WEIGHTS, target)
        else:
            shutil.rmtree(final / TRANSFORMER, ignore_errors=True)
            _save(weights, target)
        t1 = time.perf_counter()
        for name in ("log.jsonl", "provenance.json"):
            if (Path(out_dir) / name).is_file():
                writing = final / name
                shutil.copyfile(Path(out_dir) / name, writing)
        base = Path(base_path).resolve()
        meta = {"base": str(base), "base_relative": os.path.relpath(base, final.resolve()), "base_digest": base_digest,
                "lora": lora, "dtype": ",".join(sorted({str(v.dtype).removeprefix("torch.") for v in weights.values()
                                                         if v.is_floating_point()})),
                "format": "lora adapters" if lora else f"diffusers FluxTransformer2DModel in {TRANSFORMER}/",
                "weights_sha256": file_digest(target), "files": {name: file_digest(final / name) for name in
                                                                 _export_files(final, lora)}}
        writing = final / META
        tmp = writing.with_name(META + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, writing)
    except InputError:
        raise  # _save's, naming its file
    except Exception as e:  # noqa: BLE001
        error = disk_error(e, writing)
        if error is None:
            raise
        raise error from None
    return {"bytes": target.stat().st_size, "write_s": round(t1 - t0, 3),
            "checksum_s": round(time.perf_counter() - t1, 3)}


def _export_files(final: Path, lora: dict | None) -> list[str]:
    """The files of an export that evaluation loads (relative to final/)."""
    if lora:
        return ["trainable.safetensors"]
    return ["trainable.safetensors", f"{TRANSFORMER}/config.json", f"{TRANSFORMER}/{WEIGHTS}"]


def base_model(final_dir: Path, meta: dict) -> Path:
    """The base model of an export: where it was, else by its path relative to final/ (a results folder
    moved together with the base model)."""
    where = Path(meta["base"])
    relative = final_dir / meta.get("base_relative", meta["base"])
    if not (where / "model_index.json").is_file() and (relative / "model_index.json").is_file():
        return relative.resolve()
    return where  # when missing, FluxBackbone's loader names it and says how to obtain it


def check_export(final_dir: str | Path, base: str | Path | None = None) -> tuple[dict, Path]:
    """A finished run's export, checked by content before anything loads: every file evaluation loads
    has the sha256 recorded at export, and the base model (`base`, else where meta.json finds it) has
    the content the run trained on (its digest, wherever it now is). Returns (meta.json, the base
    model's path); a one-line InputError naming both sides of the first mismatch."""
    from .flux import check_flux_dir

    final_dir = Path(final_dir)
    meta_path = final_dir / META
    if not meta_path.is_file():
        raise WeightsMissingError(f"{meta_path} missing: {final_dir} is not a finished training run")
    try:
        meta = json.loads(meta_path.read_text())
        base = Path(base) if base is not None else base_model(final_dir, meta)
        files = meta.get("files") or {"trainable.safetensors": meta["weights_sha256"]}
        recorded_base = meta.get("base_digest")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{meta_path} is corrupt ({e}); retrain the run") from None
    for name, recorded in files.items():
        path = final_dir / name
        if not path.is_file():
            raise InputError(f"{path} is missing (recorded in {meta_path}); restore it or retrain the run")
        actual = file_digest(path)
        if actual != recorded:
            raise InputError(f"{path} is not the run's export: its sha256 is {actual[:12]}, {meta_path} records "
                             f"{str(recorded)[:12]} (the file was replaced or damaged); restore it or retrain the run")
    if not recorded_base:
        raise InputError(f"{meta_path} records no digest of the base model (an export of an older version); "
                         "retrain the run")
    check_flux_dir(base)
    now = model_digest(base)
    if now["sha256"] != recorded_base.get("sha256"):
        raise InputError(f"base model {base} is not the one {final_dir.parent} was trained on: "
                         f"{model_difference(recorded_base, now)} (digest {now['sha256'][:12]}, recorded "
                         f"{str(recorded_base.get('sha256'))[:12]} in {meta_path}); restore that base model or retrain")
    return meta, base


def load_trained(final_dir: str | Path, *, device="cpu", dtype="auto", base: str | Path | None = None, **kw):
    """A FluxBackbone with a run's trained weights (full fine-tune or LoRA) on its base model's other
    components, after check_export; `base` overrides the base model's location. Every tensor the run
    trained must be in the export (none silently keeps the base's weights)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .flux import FluxBackbone, resolve_dtype

    final_dir = Path(final_dir)
    meta, base = check_export(final_dir, base)
    folder = final_dir / TRANSFORMER
    if not meta["lora"] and (folder / "config.json").is_file():  # a diffusers directory: load it on its own
        from diffusers import FluxTransformer2DModel

        _check_keys(folder / WEIGHTS, folder / "config.json", final_dir)
        try:
            transformer = FluxTransformer2DModel.from_pretrained(folder, dtype=resolve_dtype(dtype, torch.device(device)))
        except (OSError, ValueError, RuntimeError, SafetensorError) as e:
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise InputError(f"{folder}: the trained weights do not fit its config.json or cannot be read ({first}); "
                             "retrain the run") from None
        backbone = FluxBackbone.from_pretrained(base, device=device, dtype=dtype, transformer=transformer, **kw)
    else:
        backbone = FluxBackbone.from_pretrained(base, device=device, dtype=dtype, **kw)
        if meta["lora"]:
            backbone.enable_training(lora_rank=meta["lora"]["rank"], lora_alpha=meta["lora"]["alpha"])
        try:
            sd = load_file(str(final_dir / "trainable.safetensors"))
        except (OSError, SafetensorError) as e:
            raise InputError(f"{final_dir / 'trainable.safetensors'} cannot be read ({e}); retrain the run") from None
        own = backbone.transformer.state_dict()
        extra = sorted(set(sd) - set(own))
        shape = sorted(k for k in set(sd) & set(own) if sd[k].shape != own[k].shape)
        # every tensor the run trained must be there: the LoRA adapters, or all of a full fine-tune's
        trained = [k for k in own if "lora_" in k] if meta["lora"] else list(own)
        missing = [k for k in trained if k not in sd]
        if extra or shape or missing:
            parts = ([f"{len(missing)} missing, e.g. {missing[:3]}"] * bool(missing) + [f"unknown {extra[:3]}"] * bool(extra)
                     + [f"other shapes {shape[:3]}"] * bool(shape))
            raise InputError(f"{final_dir}: trained weights do not fit the base model {base} ({'; '.join(parts)}); "
                             "retrain the run")
        backbone.transformer.load_state_dict(sd, strict=False)  # strict on the trained keys above; the rest is the base
    backbone.transformer.requires_grad_(False).eval()
    backbone.weights_id = meta.get("weights_sha256", "unknown")[:12]
    return backbone


def _check_keys(weights: Path, config: Path, final_dir: Path) -> None:
    """A diffusers transformer directory holds every tensor its config's model has (diffusers would
    initialise a missing one at random, with a warning)."""
    from diffusers import FluxTransformer2DModel
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), "pt") as f:
            stored = set(f.keys())
        with torch.device("meta"):
            cfg = json.loads(config.read_text())
            own = set(FluxTransformer2DModel.from_config({k: v for k, v in cfg.items() if not k.startswith("_")})
                      .state_dict())
    except (OSError, ValueError, SafetensorError) as e:
        raise InputError(f"{weights.parent}: the trained weights or config.json cannot be read ({e}); "
                         "retrain the run") from None
    missing, extra = sorted(own - stored), sorted(stored - own)
    if missing or extra:
        parts = [f"{len(missing)} missing, e.g. {missing[:3]}"] * bool(missing) + [f"unknown {extra[:3]}"] * bool(extra)
        raise InputError(f"{final_dir}: trained weights do not fit {config} ({'; '.join(parts)}); retrain the run")
