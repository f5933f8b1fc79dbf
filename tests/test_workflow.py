"""The Snakemake DAG: dry runs of both configs, the SLURM profile's submission, a killed train job
resuming, config errors before any job, and one end-to-end run of a tiny config."""

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]


def smk(workdir, *args, env=None, timeout=900, check=True):
    cmd = SNAKEMAKE + ["--directory", str(workdir), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if check and r.returncode != 0:
        raise AssertionError(f"snakemake failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def test_dry_run_default_config(tmp_path):
    counts = job_counts(smk(tmp_path, "-n", "--workflow-profile", "none", "--configfile",
                            str(ROOT / "config/config.yaml")).stdout)
    # 2 settings x 3 methods + 10 E-GRPO ablation variants, each job training both seeds (group_seeds)
    # and evaluating its runs (eval.with_training)
    assert counts["train"] == 16 and "evaluate_run" not in counts
    assert counts["world_build"] == 1 and counts["world_pretrain"] == 1 and counts["evaluate_base"] == 1
    assert counts["tables"] == 1 and counts["figures"] == 1


def test_dry_run_flux_config(tmp_path):
    counts = job_counts(smk(tmp_path, "-n", "--workflow-profile", "none", "--configfile",
                            str(ROOT / "config/flux.yaml")).stdout)
    assert counts["train"] == 48 and counts["evaluate_run"] == 48  # 3 seeds
    assert "world_build" not in counts and "world_pretrain" not in counts


def test_config_error_is_reported_before_any_job(tmp_path):
    r = smk(tmp_path, "-n", "--workflow-profile", "none", "--configfile", str(ROOT / "config/config.yaml"),
            "--config", "seeds=[-1]", check=False)
    assert r.returncode != 0 and "seeds" in r.stderr + r.stdout
    bad = (ROOT / "config/config.yaml").read_text().replace("optim: {lr: 5.0e-5}", "optim: {lr: -1.0}")
    (tmp_path / "bad.yaml").write_text(bad)
    r = smk(tmp_path, "-n", "--workflow-profile", "none", "--configfile", str(tmp_path / "bad.yaml"), check=False)
    out = r.stderr + r.stdout
    assert r.returncode != 0 and "training.optim.lr" in out and "Job stats" not in out


FAKE_SBATCH = """#!/usr/bin/env bash
echo "sbatch $*" >> "{log}"
cat >> "{log}"
exit 1
"""
FAKE_OK = "#!/usr/bin/env bash\necho \"$(basename $0) $*\" >> \"{log}\"\nexit 0\n"


def test_slurm_profile_submits_train_with_gpu_flags(tmp_path):
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for name, body in {"sbatch": FAKE_SBATCH, "sacct": FAKE_OK, "squeue": FAKE_OK, "srun": FAKE_OK,
                       "sinfo": FAKE_OK, "scontrol": FAKE_OK, "sacctmgr": FAKE_OK, "sshare": FAKE_OK}.items():
        f = bin_dir / name
        f.write_text(body.format(log=log))
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    target = "results/runs/hps/egrpo/main/seed0/final/meta.json"
    r = smk(tmp_path / "w", "--workflow-profile", str(ROOT / "workflow/profiles/slurm"), "--configfile",
            str(ROOT / "config/flux.yaml"), "--slurm-status-command", "sacct", target,
            env={"PATH": f"{bin_dir}:{os.environ['PATH']}"}, check=False, timeout=300)
    calls = log.read_text() if log.exists() else ""
    submit = [line for line in calls.splitlines() if line.startswith("sbatch")]
    assert submit, f"no sbatch call:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    assert "--gpus=h100:8" in submit[0] and "-p gpu" in submit[0] and "-t 2880" in submit[0]
    assert "--cpus-per-gpu=8" in submit[0] and "--mem 512000" in submit[0], submit[0][:600]
    # the job itself launches 8 processes with torchrun
    dry = smk(tmp_path / "w", target, "-n", "-p", "--workflow-profile", "none", "--configfile",
              str(ROOT / "config/flux.yaml")).stdout
    assert "torchrun --nproc-per-node 8 -m egrpo train" in dry


@pytest.fixture(scope="module")
def tiny_dag(tmp_path_factory):
    """One end-to-end run of the tiny test config (every table and figure)."""
    work = tmp_path_factory.mktemp("dag")
    smk(work, "--cores", "2", "--workflow-profile", "none", "--configfile", str(ROOT / ".test/config.yaml"),
        timeout=1200)
    return work


def test_end_to_end_tiny_config_writes_every_table_and_figure(tiny_dag):
    res = tiny_dag / "results"
    for s in ("hps", "hps_clip"):
        table = (res / "tables" / f"table1_{s}.md").read_text()
        for row in ("Base model", "E-GRPO", "DanceGRPO", "MixGRPO"):
            assert row in table
        assert "qualitative claim" in table
        for ext in ("csv", "tex"):
            assert (res / "tables" / f"table1_{s}.{ext}").stat().st_size > 0
    for t in ("table2_merge", "table3_steps", "table4_tau"):
        assert "E-GRPO (adaptive" in (res / "tables" / f"{t}.md").read_text()
    for f in ("fig1b_entropy", "fig1a_variance", "fig4_reward_curves", "fig5_qualitative", "tau_ablation"):
        assert (res / "figures" / f"{f}.png").stat().st_size > 1000 and (res / "figures" / f"{f}.pdf").exists()
    prov = (res / "runs/hps/egrpo/main/seed0/provenance.json").read_text()
    assert "config_hash" in prov and "git_commit" in prov


def test_killed_train_job_resumes_from_checkpoint(tiny_dag):
    """Kill a running train job (as a SLURM time limit or Ctrl-C would), start Snakemake again: the job
    resumes each of its seeds from its last checkpoint instead of starting over."""
    cfg = (ROOT / ".test/config.yaml").read_text().replace("iterations: 2", "iterations: 100")
    (tiny_dag / "long.yaml").write_text(cfg)
    target = "results/runs/hps/dancegrpo/main/seed1/final/meta.json"
    run_dir = tiny_dag / "results/runs/hps/dancegrpo/main/seed0"  # the job's first seed: killed in its run
    shutil.rmtree(run_dir)
    cmd = SNAKEMAKE + ["--directory", str(tiny_dag), target, "--cores", "1", "--workflow-profile", "none",
                       "--configfile", str(tiny_dag / "long.yaml")]
    out = open(tiny_dag / "killed_run.out", "w")
    # a shell's background jobs inherit SIGINT ignored; give Snakemake a terminal's Ctrl-C behaviour
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ckpt = run_dir / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C to the whole process group, at the first checkpoint
    proc.wait(timeout=60)
    out.close()
    rows = len((run_dir / "log.jsonl").read_text().splitlines()) if (run_dir / "log.jsonl").exists() else 0
    assert ckpt.exists() and not (run_dir / "final" / "meta.json").exists(), (
        f"the killed job finished anyway ({rows} iterations logged):\n"
        + (tiny_dag / "killed_run.out").read_text()[-3000:])
    smk(tiny_dag, target, "--cores", "1", "--workflow-profile", "none", "--configfile", str(tiny_dag / "long.yaml"))
    log = (tiny_dag / "logs/train/hps/dancegrpo/main/seeds.log").read_text()
    assert "resuming from the checkpoint at iteration" in log
    for seed in (0, 1):
        done = tiny_dag / f"results/runs/hps/dancegrpo/main/seed{seed}/final/log.jsonl"
        assert len(done.read_text().splitlines()) == 100


def test_report_holds_tables_and_figures(tiny_dag):
    smk(tiny_dag, "--report", "report.html", "--workflow-profile", "none", "--configfile",
        str(ROOT / ".test/config.yaml"))
    html = (tiny_dag / "report.html").read_text(errors="ignore")
    assert "table1_hps.md" in html and "fig1b_entropy.png" in html
