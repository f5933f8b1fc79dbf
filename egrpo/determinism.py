"""The `determinism` setting: which kernels a process may run, so that its numbers depend on the
config and not on the machine (CPU) or on the launch (GPU). Applied once at the start of every egrpo
job, before the first tensor operation; docs/determinism.md has the measurements behind each pin.

`cpu: portable` pins every library that picks its CPU code by the machine it runs on:

- ATen's own vectorised kernels (elementwise ops, reductions, softmax, attention, random fills) are
  compiled for several instruction sets and dispatched by the CPU: ATEN_CPU_CAPABILITY=avx2;
- MKL's GEMM (every matmul and linear layer): MKL_CBWR=COMPATIBLE, MKL's one conditional-numerical-
  reproducibility branch that gives the same results on Intel and non-Intel x86 CPUs. Its ISA
  branches (AVX2, AVX512) hold on Intel CPUs only: elsewhere MKL silently runs its AUTO branch, whose
  kernels follow the CPU (MKL_VERBOSE reports `CNR:AUTO` for MKL_CBWR=AVX2 on an AMD EPYC);
- oneDNN (convolutions) is switched off, so convolutions run as ATen's im2col + MKL GEMM: oneDNN
  promises equal results only on identical hardware; ONEDNN_MAX_CPU_ISA=AVX2 covers any call left;
- intra-op threads are fixed (`threads`, 1 by default): ATen's reductions and MKL's GEMM split their
  work by thread count, and the numbers change with it.

`gpu: true` makes a CUDA job repeat itself on the same GPUs: torch.use_deterministic_algorithms (an op
without a deterministic kernel raises), cuBLAS's fixed workspace, cuDNN without autotuning, and the
deterministic backward of flash and memory-efficient attention (cuDNN attention is switched off by
the trainer). What stays nondeterministic across launches, e.g. NCCL's reduction order on another
GPU count, is in README.md.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Callable

from .errors import DeviceError

# environment read by ATen, MKL and oneDNN at their first use (not at import): set before it
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE",
    "MKL_DYNAMIC": "FALSE",  # MKL may not lower the thread count by itself (its reproducibility conditions)
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
CUBLAS_WORKSPACE = ":4096:8"  # cuBLAS's documented setting for reproducible results on one stream


def intra_op_threads(spec) -> int | None:
    """The thread count a job runs with: the setting's, 1 when portable leaves it open, else torch's."""
    return spec.threads or (1 if spec.cpu == "portable" else None)


def apply(spec) -> None:
    """Put the setting in force in this process (idempotent). Portable pins are set before the
    libraries' first use and then checked; a process in which a library already chose its kernels
    cannot be pinned any more and raises DeviceError, naming what to set before starting it."""
    if spec.cpu == "portable":
        os.environ.update(PORTABLE_ENV)
    import torch

    if spec.cpu == "portable":
        torch.backends.mkldnn.enabled = False
    threads = intra_op_threads(spec)
    if threads:
        torch.set_num_threads(threads)
    if spec.gpu and torch.cuda.is_available():  # a GPU switch: CPU-only processes keep their kernels
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)  # read when cuBLAS starts
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    if spec.cpu == "portable":
        _check_portable()


def _check_portable() -> None:
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "AVX2" and "avx2" not in cpu_info()["isa"] and os.path.exists("/proc/cpuinfo"):
        raise DeviceError(f"determinism.cpu = portable needs an x86-64 CPU with AVX2; this one runs ATen's "
                          f"{capability} kernels at most (use cpu: native here)")
    if not torch.backends.mkl.is_available():
        raise DeviceError("determinism.cpu = portable needs torch built with MKL (the x86-64 wheels are): "
                          "other BLAS libraries choose their GEMM kernels by the CPU")
    problems = []
    if capability != "AVX2":
        problems.append(f"ATen runs its {capability} kernels")
    cnr = mkl_state()["cnr"]
    if cnr != PORTABLE_ENV["MKL_CBWR"]:
        problems.append(f"MKL runs in reproducibility mode {cnr}")
    if problems:
        env = " ".join(f"{k}={v}" for k, v in PORTABLE_ENV.items())
        raise DeviceError(f"determinism.cpu = portable cannot take effect in this process ({'; '.join(problems)}): "
                          f"torch ran before the setting was applied; start the job afresh, or with {env} set")


# ---- what is in force (provenance) -------------------------------------------------------------
def _capture_stdout(fn: Callable[[], None]) -> str:
    """What native code printed to file descriptor 1 while fn ran (MKL and oneDNN verbose lines)."""
    sys.stdout.flush()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(1)
        os.dup2(tmp.fileno(), 1)
        try:
            fn()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        tmp.seek(0)
        return tmp.read().decode(errors="replace")


def mkl_state() -> dict:
    """MKL's version, conditional-numerical-reproducibility mode, dynamic threading and thread count,
    as MKL itself reports them for a tiny GEMM (None where torch is built without MKL)."""
    import torch

    if not torch.backends.mkl.is_available():
        return {}

    def gemm():
        with torch.backends.mkl.verbose(torch.backends.mkl.VERBOSE_ON):
            torch.ones(8, 8) @ torch.ones(8, 8)

    call = re.search(r"CNR:(\S+) Dyn:(\d)\S* .*NThr:(\d+)", _capture_stdout(gemm))
    return {"version": _build_version(r"Math Kernel Library Version ([0-9.]+)"),
            "cnr": call.group(1) if call else None, "dynamic": bool(int(call.group(2))) if call else None,
            "threads": int(call.group(3)) if call else None}


def onednn_state() -> dict:
    """oneDNN's version, whether torch uses it, and the instruction set it dispatches to (its own
    verbose report of a tiny convolution; only when it is enabled, so a disabled oneDNN stays unused)."""
    import torch

    state = {"version": _build_version(r"MKL-DNN v([^ ]+)"), "enabled": bool(torch.backends.mkldnn.enabled)}
    if not (state["enabled"] and torch.backends.mkldnn.is_available()):
        return state

    def conv():
        with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
            torch.nn.functional.conv2d(torch.ones(16, 8, 8, 8), torch.ones(8, 8, 3, 3))

    text = _capture_stdout(conv)
    isa = re.search(r"info,cpu,isa:([^\n]+)", text)
    impl = re.search(r"exec,cpu,convolution,([^,]+),", text)
    state["isa"] = isa.group(1).strip() if isa else None
    state["convolution"] = impl.group(1) if impl else None
    return state


def _build_version(pattern: str) -> str | None:
    import torch

    m = re.search(pattern, torch.__config__.show())
    return m.group(1) if m else None


def cpu_info() -> dict:
    """The CPU: model, vendor, the instruction sets that decide kernel dispatch, caches, core counts."""
    import platform

    info = {"model": platform.processor() or platform.machine(), "vendor": None, "isa": [],
            "logical_cpus": os.cpu_count()}
    try:
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        info["usable_cpus"] = os.cpu_count()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return info
    fields = dict(re.findall(r"^(model name|vendor_id|flags)\s*:\s*(.*)$", text, re.M)[:3])
    info["model"] = fields.get("model name", info["model"]).strip()
    info["vendor"] = fields.get("vendor_id")
    flags = set(fields.get("flags", "").split())
    info["isa"] = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    caches = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    for entry in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        try:
            level, kind, size = (Path(base, entry, k).read_text().strip() for k in ("level", "type", "size"))
        except OSError:
            continue
        caches[f"L{level}{'' if kind == 'Unified' else kind[0].lower()}"] = size
    info["caches"] = caches
    return info


def gpu_info(device) -> dict:
    """The GPU a CUDA job runs on and the library versions that decide its kernels."""
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    nccl = torch.cuda.nccl.version() if hasattr(torch.cuda, "nccl") else None
    return {"name": torch.cuda.get_device_name(index), "capability": f"{major}.{minor}",
            "count": torch.cuda.device_count(), "driver": nvidia_driver_version(), "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "nccl": ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl}


def nvidia_driver_version(proc_file: str = "/proc/driver/nvidia/version") -> str | None:
    """The NVIDIA kernel driver's version (Linux), else nvidia-smi's answer, else None."""
    try:
        m = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", open(proc_file).read())
        if m:
            return m.group(1)
    except OSError:
        pass
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def determinism_flags() -> dict:
    """torch's process-wide switches that decide whether kernels repeat themselves."""
    import torch

    cuda = torch.backends.cuda
    return {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
            "sdp": {"flash": cuda.flash_sdp_enabled(), "mem_efficient": cuda.mem_efficient_sdp_enabled(),
                    "cudnn": cuda.cudnn_sdp_enabled(), "math": cuda.math_sdp_enabled()}}


ENV_KEYS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_DYNAMIC", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG", "NCCL_ALGO", "NCCL_PROTO")


def software() -> dict:
    """The code: git commit of the package's checkout, versions of the packages that compute, Python, the C
    library, the operating system."""
    import importlib.metadata as md
    import platform
    import subprocess
    from pathlib import Path

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    versions = {}
    for pkg in ("torch", "diffusers", "transformers", "peft", "numpy", "egrpo"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    import torch

    versions["torch"] = torch.__version__  # with its build tag: a CPU and a CUDA wheel are compiled apart
    libc = " ".join(platform.libc_ver()).strip() or None  # its libm computes the scalar exp/log/sin tails
    return {"git_commit": commit, "versions": versions, "python": platform.python_version(), "libc": libc,
            "os": platform.platform()}


def record(device="cpu") -> dict:
    """Provenance of a job that is not a training run (world build, pretraining, evaluation)."""
    return {**software(), "environment": environment(device)}


def environment(device) -> dict:
    """Everything besides the config and the code that decides a job's numbers: the CPU and its
    kernel libraries as they run now, thread counts, determinism switches and, on CUDA, the GPU stack.
    Call it after `apply` (it runs a tiny GEMM, which fixes MKL's mode for the process)."""
    import torch

    out = {"cpu": cpu_info(),
           "kernels": {"aten_capability": torch.backends.cpu.get_cpu_capability(), "mkl": mkl_state(),
                       "onednn": onednn_state()},
           "threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()},
           "env": {k: os.environ.get(k) for k in ENV_KEYS},
           "switches": determinism_flags(),
           "gpu": gpu_info(device) if getattr(device, "type", device) == "cuda" else None}
    return out
