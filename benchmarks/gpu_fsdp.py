"""The GPU check of what config/flux.yaml trains (FLUX.1-dev full fine-tuning under FSDP2), decisive on one
GPU in at most 8 minutes. Writes gpu_fsdp.json to --out after every step, so a run stopped by its time
limit still returns what it measured.

    python3 benchmarks/gpu_fsdp.py --out DIR [--phases A B] [--budget-s 420]
    python benchmarks/gpu_fsdp.py --tiny --out DIR     # the same steps at tiny size on the CPU (CI)

- preflight: every module the path imports, this tree's methods (found on disk: no install needed),
  torch / CUDA / driver / GPU memory, free disk against what phase B writes; one line naming everything
  missing, and a stop.
- phase A: FLUX.1-dev's whole architecture as rank 0 of 8 (a fake process group: real CUDA memory and
  compute, collectives skipped; no weights needed), every phase's own peak against the memory plan:
  start-up in the obvious order and sharded first, training steps at 1 and 12 rows, optimizer steps,
  sampling at 24 rows with the model gathered once and per forward; seconds per step.
- phase B: end to end through `torchrun --nproc-per-node 1 -m egrpo train` on FLUX.1-dev's widths with
  2 + 4 blocks (1.3 B parameters): DanceGRPO groups of 12 trained 12 rows per forward, one iteration
  and its checkpoint, a resume to two, the export, an evaluation on the GPU; each phase's logged peak
  against the plan of the same run; checkpoint save / verify / load and export throughput; the first
  (on-policy) update's ratio deviation and clip fraction under bf16 against the clip range.
What a bare CUDA image lacks travels as wheels (benchmarks/gpu_wheels.py; benchmarks/README.md, "GPU check").
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a copied tree, never pip-installed: egrpo and its methods from here

# what the path imports beyond the standard library (module: distribution to carry)
MODULES = {"torch": "torch", "numpy": "numpy", "PIL": "pillow", "yaml": "pyyaml", "pydantic": "pydantic",
           "tqdm": "tqdm", "pandas": "pandas", "safetensors": "safetensors", "tokenizers": "tokenizers",
           "huggingface_hub": "huggingface-hub", "transformers": "transformers", "diffusers": "diffusers"}
EGRPO_MODULES = ("egrpo.cli", "egrpo.trainer", "egrpo.evaluate", "egrpo.memtrace", "egrpo.tiny_flux")
PROMPTS = ["A papaya fruit dressed as a sailor", "A spoon dressed up with eyes and a smile"]
BAND = (0.9, 1.15)  # measured / planned: outside it the plan (and the README's table) is re-derived
GB = 1e9


class Results:
    """gpu_fsdp.json, rewritten whole after every step."""

    def __init__(self, out: Path):
        self.path, self.data = out / "gpu_fsdp.json", {"started": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.t0 = time.perf_counter()

    def set(self, key: str, value) -> None:
        self.data[key] = value
        self.data["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)

    def left(self, budget: float) -> float:
        return budget - (time.perf_counter() - self.t0)


def phase_b_arch(tiny: bool) -> dict:
    """Phase B's transformer: FLUX.1-dev's widths with 2 + 4 blocks (tiny: a small one)."""
    from egrpo.memory import FLUX_DEV

    if tiny:
        return dict(FLUX_DEV, num_layers=1, num_single_layers=2, num_attention_heads=2, attention_head_dim=16,
                    joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 6, 6))
    return dict(FLUX_DEV, num_layers=2, num_single_layers=4)


def disk_needed(tiny: bool) -> float:
    """Bytes phase B writes at most at once: the model (bf16), two checkpoints while the second is
    written (fp32 weights + two AdamW moments), an fp32 export, and 5 GB to spare."""
    from egrpo.memory import count_parameters

    n = count_parameters(phase_b_arch(tiny))["total"]
    return 2 * n + 0.5 * GB + 2 * 12 * n + 4 * n + (0 if tiny else 5 * GB)


def driver_version() -> str | None:
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                           text=True, timeout=20)
        return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


# ---- preflight ----------------------------------------------------------------------------------
def preflight(args, res: Results, work: Path) -> bool:
    missing, versions = [], {}
    for module, dist_name in MODULES.items():
        try:
            versions[module] = getattr(importlib.import_module(module), "__version__", "?")
        except ImportError as e:
            missing.append(f"{dist_name} ({e})")
    info = {"python": platform.python_version(), "versions": versions, "tree": str(ROOT)}
    if not missing:
        for module in EGRPO_MODULES:
            try:
                importlib.import_module(module)
            except ImportError as e:
                missing.append(f"{e.name} (imported by {module})")
        from egrpo.methods import registry

        info["methods"] = sorted(registry())
        if "dancegrpo" not in info["methods"]:
            missing.append("the dancegrpo method (baselines/ not found beside egrpo/)")
    if "torch" in versions:
        import torch

        info.update(torch_cuda=torch.version.cuda, driver=driver_version(), cuda=torch.cuda.is_available())
        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            info.update(gpu=torch.cuda.get_device_name(0), gpu_free_gib=round(free / 2**30, 1),
                        gpu_total_gib=round(total / 2**30, 1))
        elif not args.tiny:
            missing.append(f"a CUDA device (torch {torch.__version__} built for CUDA {torch.version.cuda}, "
                           f"NVIDIA driver {info['driver']})")
        if not missing:
            need, free = disk_needed(args.tiny), shutil.disk_usage(work).free
            info.update(disk_free_gb=round(free / GB, 1), disk_needed_gb=round(need / GB, 1))
            if free < need:
                missing.append(f"disk: {free / GB:.1f} GB free at {work}, phase B writes up to {need / GB:.1f} GB")
    info["missing"] = missing
    res.set("preflight", info)
    if missing:
        print(f"gpu_fsdp preflight: missing {'; '.join(missing)} (benchmarks/README.md, 'GPU check', says how "
              "to carry them)", flush=True)
    return not missing


# ---- phase A: FLUX.1-dev as rank 0 of 8 ----------------------------------------------------------
def ratios(measured: dict, planned: dict) -> dict:
    out = {}
    for phase, gib in measured.items():
        if phase in planned and gib > 0:
            r = planned[phase] / gib
            out[phase] = {"measured_gib": gib, "planned_gib": planned[phase], "planned_over_measured": round(r, 3),
                          "within_band": BAND[0] <= 1 / r <= BAND[1]}
    return out


def phase_a(args, res: Results) -> None:
    from egrpo.memory import FLUX_DEV, GiB, count_parameters
    from egrpo.memtrace import measure_phases, planned_phases

    if args.tiny:  # fake tensors on the CPU: the same steps, the tracker's numbers
        arch, tokens, side, text = phase_b_arch(True), (16, 16), 64, 16
    else:
        arch, tokens, side, text = FLUX_DEV, (2025, 512), 720, 512
    section = {"architecture": "FLUX.1-dev" if not args.tiny else "tiny", "rank": "0 of 8 (fake process group)"}
    res.set("phase_a", section)
    measured = measure_phases(arch, world=8, batches=(1, 12), sample_rows=24, num_tokens=tokens, trace=args.tiny,
                              on_phase=lambda m: res.set("phase_a", {**section, "measured": m}))
    planned = planned_phases(arch, world=8, batches=(1, 12), sample_rows=24, height=side, text_tokens=text)
    planned["start-up (obvious order)"] = 4 * count_parameters(arch)["total"] / GiB  # the whole fp32 transformer
    compared = ratios({k: v for k, v in measured.items() if not k.startswith("s/")}, planned)
    outside = [k for k, v in compared.items() if not v["within_band"]]
    verdict = "the plan holds phase by phase" if not outside else \
        f"outside {BAND[0]}-{BAND[1]}x: {', '.join(outside)}: re-derive the plan and README.md's table"
    if args.tiny:  # a few thousand parameters: bookkeeping, not hidden states, fills their memory
        verdict = "tiny (CI): the steps ran; at this size the ratios say nothing about the plan"
    res.set("phase_a", {**section, "measured": measured, "compared": compared, "verdict": verdict})
    import gc

    import torch

    gc.collect()  # FSDP's hooks hold the model in reference cycles: phase B's process needs the GPU
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- phase B: end to end under torchrun ----------------------------------------------------------
def write_model(path: Path, tiny: bool) -> None:
    """A Flux-format pipeline of phase B's transformer, FLUX.1-dev's VAE and one-layer text encoders of
    FLUX.1-dev's widths, written in bf16 as FLUX.1-dev ships (tiny: the stand-ins' sizes)."""
    import torch

    from egrpo.standins import FLUX_VAE_SCALING, FLUX_VAE_SHIFT
    from egrpo.tiny_flux import TinyFluxSpec, build_tiny_flux

    a = phase_b_arch(tiny)
    common = dict(latent_channels=16, num_layers=a["num_layers"], num_single_layers=a["num_single_layers"],
                  num_heads=a["num_attention_heads"], head_dim=a["attention_head_dim"], axes_dims_rope=a["axes_dims_rope"],
                  text_dim=a["joint_attention_dim"], clip_dim=a["pooled_projection_dim"],
                  vae_scaling_factor=FLUX_VAE_SCALING, vae_shift_factor=FLUX_VAE_SHIFT)
    spec = TinyFluxSpec(max_text_len=16, vae_channels=(16, 16, 32, 32), **common) if tiny else \
        TinyFluxSpec(max_text_len=512, vae_channels=(128, 256, 512, 512), **common)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        build_tiny_flux(spec).save_pretrained(path, safe_serialization=True)
    finally:
        torch.set_default_dtype(default)


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run(cmd: list[str], log: Path, timeout: float) -> float:
    """A subprocess with its own time limit (what is left of the budget); its output in `log`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if not torch_cuda():
        env["OMP_NUM_THREADS"] = "1"  # CPU processes: one thread each, as the DAG's jobs
    t0 = time.perf_counter()
    with open(log, "w") as f:
        try:
            r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{' '.join(cmd[-8:])} ran past its {timeout:.0f} s; see {log}") from None
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[-8:])} failed ({r.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    return round(time.perf_counter() - t0, 1)


def throughput(events: list[dict]) -> dict:
    """GB/s of each checkpoint and export step (io.jsonl), and what that rate means at FLUX.1-dev's size."""
    from egrpo.memory import FLUX_DEV, count_parameters

    n = count_parameters(FLUX_DEV)["total"]
    out = {}
    for e in events:
        rate = lambda key: round(e["bytes"] / GB / e[key], 2) if e.get(key) else None  # noqa: E731
        if e["event"] == "checkpoint saved":
            out["save"] = {"gb": round(e["bytes"] / GB, 2), "write_gb_s": rate("write_s"),
                           "checksum_gb_s": rate("checksum_s"), "total_s": e["total_s"],
                           "flux_dev_checkpoint_s_one_disk": round(12 * n / (e["bytes"] / e["total_s"]), 0)}
        elif e["event"] == "checkpoint loaded":
            out["load"] = {"gb": round(e["bytes"] / GB, 2), "verify_gb_s": rate("verify_s"), "load_gb_s": rate("load_s"),
                           "flux_dev_resume_s_one_disk": round(12 * n * (1 / (e["bytes"] / e["verify_s"])
                                                                         + 1 / (e["bytes"] / e["load_s"])), 0)}
        elif e["event"] == "exported":
            seconds = e["gather_s"] + e["write_s"] + e["checksum_s"]
            out["export"] = {"gb": round(e["bytes"] / GB, 2), "gather_s": e["gather_s"], "write_gb_s": rate("write_s"),
                             "flux_dev_bf16_export_s": round(2 * n / (e["bytes"] / seconds), 0),
                             "flux_dev_fp32_export_s": round(4 * n / (e["bytes"] / seconds), 0)}
    return out


def phase_b(args, res: Results, work: Path, budget: float) -> None:
    import torch
    import yaml

    from egrpo.config import resolve
    from egrpo.memory import PHASES, device_gib, plan, total

    section: dict = {"transformer": "FLUX.1-dev widths, 2 + 4 blocks" if not args.tiny else "tiny"}
    t0 = time.perf_counter()
    write_model(work / "model", args.tiny)
    section["write_model_s"] = round(time.perf_counter() - t0, 1)
    res.set("phase_b", section)
    side = 64 if args.tiny else 720
    config = {
        "name": "gpu-fsdp", "method": {"name": "dancegrpo", "group_size": 12, "update": "iteration",
                                       "train_fraction": 1.0, "num_steps": 6 if args.tiny else 16},
        "model": {"path": str(work / "model"), "height": side, "width": side,
                  "max_sequence_length": 16 if args.tiny else 512, "gradient_checkpointing": True, "decode_batch": 8,
                  "cudnn_attention": False},
        # one prompt's group of 12: sampling forwards and training forwards of 12 distinct rows each
        "train": {"prompts": PROMPTS, "iterations": 1, "prompts_per_iteration": 1, "checkpoint_every": 1,
                  "micro_batch": 12, "sample_batch": 12, "parallel": "fsdp"},
        "optim": {"lr": 1e-5}, "rewards": {"names": ["brightness"]},
    }
    (work / "run.yaml").write_text(yaml.safe_dump(config))
    cfg = resolve(config)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m", "egrpo"]
    train = torchrun + ["train", "--config", str(work / "run.yaml"), "--out", str(work / "run"), "--no-progress"]
    out = Path(args.out)
    section["train_1_iteration_s"] = run(train, out / "gpu_fsdp_train.log", res.left(budget))
    res.set("phase_b", section)
    section["resume_to_2_s"] = run(train + ["--set", "train.iterations=2"], out / "gpu_fsdp_resume.log", res.left(budget))
    section["resumed"] = "resuming from the checkpoint at iteration 1" in (out / "gpu_fsdp_resume.log").read_text()
    log = [json.loads(line) for line in (work / "run" / "log.jsonl").read_text().splitlines()]
    events = [json.loads(line) for line in (work / "run" / "io.jsonl").read_text().splitlines()]
    first = log[0]
    section.update(
        iterations_logged=[r["iteration"] for r in log], iteration_s=[round(r["time/total"], 1) for r in log],
        time_split_s={k: round(first[f"time/{k}"], 1) for k in ("sampling", "reward", "training")},
        rows_per_training_forward=config["train"]["micro_batch"], trained_pairs=first["trained_pairs"],
        checkpoint_files=sorted(f.name for f in (work / "run" / "checkpoints" / "last").iterdir()),
        first_update={"ratio_max_dev": first["ratio/first_update_max_dev"], "clip_fraction": first["clip_fraction"],
                      "clip_range": cfg.optim.clip_range,
                      "on_policy_rows_clipped": first["ratio/first_update_max_dev"] > cfg.optim.clip_range},
        throughput=throughput(events), io=events)
    # each phase's peak (the first row of each process holds its start-up) against the run's own plan
    if torch.cuda.is_available():
        planned = {k: total(v) for k, v in plan(cfg, 1, device_gib(torch.device("cuda", 0))).items()}
        peaks = {phase: max((r.get(f"memory/{key}_gib", 0.0) for r in log), default=0.0) for phase, key in PHASES.items()}
        section["compared"] = ratios(peaks, planned)
    res.set("phase_b", section)
    shutil.rmtree(work / "run" / "checkpoints", ignore_errors=True)  # room for nothing else to fail on

    (work / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    protocol = {"prompts": str(work / "prompts.txt"), "metrics": {"brightness": {"reward": "brightness"}},
                "sampler": {"sampler": "flux_pipeline", "num_steps": 2 if args.tiny else 4, "height": side,
                            "width": side, "batch": 2}, "max_sequence_length": config["model"]["max_sequence_length"]}
    (work / "eval.json").write_text(json.dumps(protocol))
    section["evaluate_s"] = run([sys.executable, "-m", "egrpo", "evaluate", "--run", str(work / "run"), "--protocol",
                                 str(work / "eval.json"), "--device", "auto", "--out", str(work / "eval.csv")],
                                out / "gpu_fsdp_eval.log", res.left(budget))
    summary = (work / "eval.summary.csv").read_text()
    section.update(evaluation_summary=summary, evaluated_trained_weights="base" not in summary.splitlines()[1],
                   export_is_a_diffusers_directory=(work / "run" / "final" / "transformer" / "config.json").is_file())
    res.set("phase_b", section)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="the same steps at tiny size on the CPU (CI)")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--work", default=None, help="folder for phase B's model, checkpoints and export (default: a "
                   "temporary folder; not --out, which comes back from a device machine)")
    p.add_argument("--phases", nargs="+", default=["A", "B"], choices=["A", "B"], help="the preflight always runs")
    p.add_argument("--budget-s", type=float, default=420, help="stop starting new steps past this (seconds)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_fsdp_", dir=args.work))
    res = Results(out)
    res.set("command", " ".join(sys.argv))
    failed = None
    try:
        if not preflight(args, res, work):  # always: a missing module would fail every phase
            raise SystemExit(3)
        for name, fn in (("A", lambda: phase_a(args, res)), ("B", lambda: phase_b(args, res, work, args.budget_s))):
            if name in args.phases:
                if res.left(args.budget_s) < 30:
                    res.set(f"phase_{name.lower()}_skipped", "time budget spent")
                    continue
                try:
                    fn()
                except Exception as e:  # noqa: BLE001 - recorded, and the next phase still runs
                    failed = f"phase {name}: {type(e).__name__}: {e}"
                    res.set(f"phase_{name.lower()}_error", failed)
                    print(failed, file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res.set("finished", True)
    print(json.dumps(res.data, indent=1, default=str))
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
