"""egrpo.determinism: the portable CPU setting pins every kernel library of a fresh `egrpo` process, a
portable run's numbers do not depend on the threads its machine offers (a native run's do), the GPU
switches, the provenance of the CPU and GPU stack, and the setting's path from the config to every job."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_run_config
from egrpo import determinism
from egrpo.config import DeterminismConfig, determinism_setting
from egrpo.errors import ConfigError, DeviceError

ROOT = Path(__file__).resolve().parents[1]
PINS = tuple(determinism.PORTABLE_ENV) + ("CUBLAS_WORKSPACE_CONFIG",)


def _python(code: str, **env) -> dict:
    """Run code in a fresh interpreter (torch not yet started) and return the JSON it prints last."""
    clean = {k: v for k, v in os.environ.items() if k not in PINS}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**clean, **env}, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_portable_pins_every_kernel_library_and_the_threads():
    """A fresh process offered 4 threads and MKL's AVX2 branch (which MKL runs as its CPU-dependent AUTO
    branch on non-Intel CPUs) ends up on ATen's AVX2 kernels, MKL's vendor-neutral branch, no oneDNN and
    one thread; a convolution then runs no oneDNN primitive."""
    out = _python("""
import json, torch
from egrpo import determinism
from egrpo.config import DeterminismConfig
determinism.apply(DeterminismConfig(cpu="portable"))
def conv():
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        torch.nn.functional.conv2d(torch.ones(16, 8, 8, 8), torch.ones(8, 8, 3, 3))
env = determinism.environment(torch.device("cpu"))
print(json.dumps({**env, "onednn_calls": determinism._capture_stdout(conv).count("exec,cpu,convolution")}))
""", OMP_NUM_THREADS="4", MKL_CBWR="AVX2")
    k = out["kernels"]
    assert k["aten_capability"] == "AVX2"
    assert k["mkl"]["cnr"] == "COMPATIBLE" and k["mkl"]["dynamic"] is False and k["mkl"]["threads"] == 1
    assert k["onednn"]["enabled"] is False and out["onednn_calls"] == 0
    assert out["threads"]["intra_op"] == 1 and out["env"]["MKL_CBWR"] == "COMPATIBLE"


def test_native_leaves_the_libraries_to_the_machine():
    out = _python("""
import json, torch
from egrpo import determinism
from egrpo.config import DeterminismConfig
determinism.apply(DeterminismConfig(cpu="native", threads=3))
print(json.dumps(determinism.environment(torch.device("cpu"))))
""")
    assert out["kernels"]["mkl"]["cnr"] == "OFF" and out["threads"]["intra_op"] == 3
    assert out["env"]["ATEN_CPU_CAPABILITY"] is None


@pytest.fixture
def restored_env():
    """apply() sets process-wide environment variables: put them back after the test."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_portable_refuses_a_process_whose_kernels_are_already_chosen(monkeypatch, restored_env):
    """This test process has run torch with MKL unpinned: a portable setting cannot take effect any more
    and says what to do instead of training on unpinned kernels."""
    for k in PINS:
        os.environ.pop(k, None)
    torch.ones(8, 8) @ torch.ones(8, 8)  # MKL has started in this process, without a CNR mode
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", torch.backends.mkldnn.enabled)
    threads = torch.get_num_threads()
    try:
        with pytest.raises(DeviceError, match="start the job afresh.*MKL_CBWR=COMPATIBLE"):
            determinism.apply(DeterminismConfig(cpu="portable"))
    finally:
        torch.set_num_threads(threads)


def _train(model_dir, tmp_path, name, setting, threads_offered):
    """`egrpo train` of a tiny DanceGRPO run in a fresh process offered `threads_offered` threads; its
    final weights and losses."""
    raw = tiny_run_config(model_dir, "dancegrpo", train={"iterations": 1, "checkpoint_every": 1},
                          determinism=setting)
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / name
    clean = {k: v for k, v in os.environ.items() if k not in PINS}
    r = subprocess.run([sys.executable, "-m", "egrpo", "train", "--config", str(cfg), "--method", "dancegrpo",
                        "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=600,
                       env={**clean, "OMP_NUM_THREADS": str(threads_offered)})
    assert r.returncode == 0, r.stderr[-3000:]
    losses = [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]
    provenance = json.loads((out / "provenance.json").read_text())
    return (out / "final" / "trainable.safetensors").read_bytes(), losses, provenance


def test_a_portable_run_does_not_depend_on_the_threads_its_machine_offers(tiny_flux_dir, tmp_path):
    """The same config, offered 1 or 4 threads (Snakemake's --cores, or all cores of the machine for a
    run by hand): natively the numbers follow the thread count (ATen's and MKL's work split), portable
    they do not."""
    native = [_train(tiny_flux_dir, tmp_path, f"native{n}", {"cpu": "native"}, n) for n in (1, 4)]
    assert native[0][0] != native[1][0], "this model's numbers no longer depend on the threads: pick a bigger one"
    portable = [_train(tiny_flux_dir, tmp_path, f"portable{n}", {"cpu": "portable"}, n) for n in (1, 4)]
    assert portable[0][0] == portable[1][0] and portable[0][1] == portable[1][1]
    prov = portable[1][2]
    assert prov["determinism"] == {"cpu": "portable", "threads": None, "gpu": False}
    assert prov["environment"]["threads"]["intra_op"] == 1
    assert prov["environment"]["kernels"]["mkl"]["cnr"] == "COMPATIBLE"
    assert native[1][2]["environment"]["threads"]["intra_op"] > 1  # torch takes up to the CPUs there are


def test_gpu_determinism_switches(monkeypatch, restored_env):
    """determinism.gpu on a machine with CUDA: deterministic algorithms, cuBLAS's fixed workspace, cuDNN
    without autotuning (checked with CUDA reported available; the switches are process-wide flags)."""
    os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    threads = torch.get_num_threads()
    try:
        determinism.apply(DeterminismConfig(gpu=True))
        flags = determinism.determinism_flags()
        assert flags["deterministic_algorithms"] and not flags["warn_only"]
        assert flags["cudnn_deterministic"] and not flags["cudnn_benchmark"]
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == determinism.CUBLAS_WORKSPACE == flags["cublas_workspace_config"]
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)


def test_gpu_determinism_is_a_gpu_switch_only(monkeypatch, restored_env):
    os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    determinism.apply(DeterminismConfig(gpu=True))
    assert not torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_cpu_provenance_names_the_machine_and_its_kernels():
    env = determinism.environment(torch.device("cpu"))
    assert env["cpu"]["model"] and env["cpu"]["logical_cpus"] >= 1 and env["gpu"] is None
    if Path("/proc/cpuinfo").exists():
        assert env["cpu"]["vendor"] and env["cpu"]["caches"]
    k = env["kernels"]
    assert k["aten_capability"] == torch.backends.cpu.get_cpu_capability()
    assert k["mkl"]["version"] and k["mkl"]["cnr"] and k["onednn"]["version"]
    assert env["threads"]["intra_op"] == torch.get_num_threads()
    assert set(env["switches"]) >= {"deterministic_algorithms", "cudnn_deterministic", "sdp"}


def test_gpu_provenance_fields(monkeypatch, tmp_path):
    """The GPU fields, from torch's CUDA queries and the driver's version file (faked: no GPU here)."""
    version = tmp_path / "version"
    version.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: (9, 0))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91002)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda.nccl, "version", lambda: (2, 27, 3))
    read = determinism.nvidia_driver_version
    monkeypatch.setattr(determinism, "nvidia_driver_version", lambda: read(str(version)))
    gpu = determinism.environment(torch.device("cuda", 3))["gpu"]
    assert gpu == {"name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "count": 8, "driver": "550.54.15",
                   "cuda": "12.8", "cudnn": 91002, "nccl": "2.27.3"}


def test_driver_version_without_a_driver(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi either
    assert determinism.nvidia_driver_version(str(tmp_path / "absent")) is None


def test_the_setting_travels_from_the_config_to_every_job():
    """Written once at the top level: every run config, the evaluation protocol and the world's spec
    carry it; a copy under training (or a method's overlay) or under world is refused."""
    from egrpo.experiment import Experiment

    raw = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    exp = Experiment.load(raw)
    assert exp.determinism == DeterminismConfig(cpu="portable", threads=1)
    for s, m, v in exp.configurations:
        assert exp.run_config(s, m, v).determinism == exp.determinism
    assert exp.eval_protocol().determinism == exp.determinism
    assert exp.world_spec().determinism == exp.determinism and exp.world_spec().seed == exp.world.seed
    flux = Experiment.from_files([ROOT / "config/flux.yaml"])
    assert flux.determinism.cpu == "native" and flux.run_config("hps", "egrpo").determinism.cpu == "native"
    for where, copy in (("training.determinism", {"training": {**raw["training"], "determinism": {"cpu": "native"}}}),
                        ("training.methods.egrpo.determinism",
                         {"training": {**raw["training"], "methods": {"egrpo": {"determinism": {"cpu": "native"}}}}}),
                        ("world.determinism", {"world": {**raw["world"], "determinism": {"cpu": "native"}}})):
        with pytest.raises(ConfigError, match=f"{re.escape(where)}: set once at the top level"):
            Experiment.load({**raw, **copy})
    with pytest.raises(ConfigError, match="determinism.cpu"):
        determinism_setting({"cpu": "avx512"})
    with pytest.raises(ConfigError, match="determinism.threads"):
        Experiment.load({**raw, "determinism": {"threads": 0}})


def test_the_rules_write_the_setting_into_every_spec_and_run_each_job_on_its_threads(tmp_path):
    """Every spec file a job reads (each run config, the evaluation protocol, the world's spec) carries
    the top-level setting; a job's rule threads are its intra-op threads (pretraining's too, so
    Snakemake schedules what the job runs)."""
    overlay = tmp_path / "threads.yaml"
    overlay.write_text("determinism: {cpu: portable, threads: 2}\n")
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--snakefile", str(ROOT / "workflow/Snakefile"),
                        "--directory", str(tmp_path), "--cores", "4", "--configfile", str(ROOT / "config/config.yaml"),
                        str(overlay)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    specs = {m.group(1): json.loads(m.group(2)) for m in re.finditer(
        r"^    output: (\S+)\n(?:    [^\n]*\n)*Shell command: [^\n]*?printf '%s\\n' '(\{\n(?:[^\n]*\n)*?\})'", out, re.M)}
    folders = {path.rsplit("/", 1)[0] for path in specs}  # each spec file is named by its content
    assert {"results/configs/world", "results/configs/eval", "results/configs/hps/egrpo/main"} <= folders
    for path, spec in specs.items():
        if path.startswith("results/configs/experiment/"):  # the config as written, which the reports read
            continue
        determinism = spec["run"]["determinism"] if path.startswith("results/configs/variance/") else spec["determinism"]
        assert determinism == {"cpu": "portable", "threads": 2, "gpu": False}, path
    threads = {m.group(1): m.group(2) for m in re.finditer(r"rule (\w+):(?:\n    .*)*?\n    threads: (\d+)", out)}
    assert threads["world_build"] == threads["world_pretrain"] == threads["train"] == threads["evaluate_base"] == "2"
