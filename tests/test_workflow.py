"""The Snakemake DAG: dry runs of both configs, the default profile, lint, config errors before any
job, the SLURM profile's submission, an edit rerunning exactly the jobs it changes, a killed train job
resuming, and one end-to-end run of a tiny config."""

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import job_counts

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "workflow" / "Snakefile"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE)]
TEST_CONFIG = ROOT / ".test" / "config.yaml"


def smk(workdir, *args, env=None, timeout=900, check=True, profile="none", snakefile=SNAKEFILE, cwd=ROOT):
    cmd = ([sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir), *args]
           + (["--workflow-profile", profile] if profile else []))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
                       cwd=cwd)
    if check and r.returncode != 0:
        raise AssertionError(f"snakemake failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def test_dry_run_default_config(tmp_path):
    from egrpo.experiment import Experiment

    counts = job_counts(smk(tmp_path, "-n", "--configfile", str(ROOT / "config/config.yaml")).stdout)
    # one job per (setting, method, variant) the config declares (2 settings x 6 methods + the E-GRPO
    # ablation rows), each training every seed (group_seeds) and evaluating its runs (eval.with_training);
    # each from its own resolved run config
    n = len(Experiment.load(yaml.safe_load((ROOT / "config/config.yaml").read_text())).configurations)
    assert n >= 12 + 3 and counts["train"] == n and counts["run_config"] == n and "evaluate_run" not in counts
    assert counts["world_build"] == 1 and counts["world_pretrain"] == 1 and counts["evaluate_base"] == 1
    assert counts["tables"] == 1 and counts["figures"] == 1


def test_dry_run_world_study(tmp_path):
    """The study is an overlay of the default config: six methods in two settings, every ablation row
    (10), 4 seeds per job."""
    out = smk(tmp_path, "-n", "-p", "--configfile", str(ROOT / "config/config.yaml"),
              str(ROOT / "config/world_study.yaml")).stdout
    assert job_counts(out)["train"] == 2 * 6 + 10 and "--seed 0 1 2 3" in out


def test_dry_run_flux_config(tmp_path):
    counts = job_counts(smk(tmp_path, "-n", "--configfile", str(ROOT / "config/flux.yaml")).stdout)
    runs = 3 * (2 * 6 + 10)  # 3 seeds of six methods in two settings and ten E-GRPO ablation rows
    assert counts["train"] == runs and counts["evaluate_run"] == runs  # plans without any weights present
    assert "world_build" not in counts and "world_pretrain" not in counts


def test_the_default_profile_is_loaded_and_lint_is_clean(tmp_path):
    """The catalog layout (workflow/Snakefile, run from the checkout) loads the root profiles/default too;
    both Snakefiles lint clean with both configs."""
    r = smk(tmp_path, "-n", "--configfile", str(ROOT / "config/config.yaml"), profile=None)
    assert "Using workflow specific profile profiles/default" in r.stdout + r.stderr
    for snakefile in ("Snakefile", "workflow/Snakefile"):
        for config in ("config/config.yaml", "config/flux.yaml"):
            r = subprocess.run([sys.executable, "-m", "snakemake", "-s", snakefile, "--lint", "--configfile", config],
                               cwd=ROOT, capture_output=True, text=True, timeout=300)
            assert r.returncode == 0 and "good condition" in r.stdout + r.stderr, (r.stdout + r.stderr)[-2000:]


def test_the_snakefiles_are_formatted():
    """Both Snakefiles and every rule file as snakefmt writes them (line length: pyproject's [tool.snakefmt])."""
    snakefmt = Path(sys.executable).with_name("snakefmt")
    r = subprocess.run([str(snakefmt), "--check", "Snakefile", "workflow/"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"run `snakefmt Snakefile workflow/`:\n{(r.stdout + r.stderr)[-2000:]}"
    files = 2 + len(list((ROOT / "workflow" / "rules").glob("*.smk")))  # both Snakefiles and the rule files
    assert f"{files} file(s) would be left unchanged" in r.stdout + r.stderr


def test_the_root_snakefile_plans_both_dags_with_its_profile(tmp_path):
    """The layout the project was specified with: `snakemake` beside the root Snakefile plans the default
    and the flux DAG through its own default target, with profiles/default's resources (one local GPU:
    a training job of config/flux.yaml gets one process, 8 without the profile)."""
    root = ROOT / "Snakefile"
    default = job_counts(smk(tmp_path, "-n", "--configfile", str(ROOT / "config/config.yaml"), snakefile=root,
                             profile=None, cwd=tmp_path).stdout)
    catalog = job_counts(smk(tmp_path, "-n", "--configfile", str(ROOT / "config/config.yaml")).stdout)
    assert default.pop("default") == 1 and catalog.pop("all") == 1 and default == catalog
    r = smk(tmp_path, "-n", "-p", "--configfile", str(ROOT / "config/flux.yaml"), snakefile=root, profile=None,
            cwd=tmp_path)
    out = r.stdout + r.stderr
    assert f"Using workflow specific profile {ROOT / 'profiles/default'}" in out
    assert "python -m egrpo train" in out and "torchrun" not in out
    bare = smk(tmp_path, "-n", "-p", "--configfile", str(ROOT / "config/flux.yaml"), snakefile=root, cwd=tmp_path)
    assert "torchrun --standalone --nproc-per-node 8" in bare.stdout
    assert job_counts(r.stdout) == job_counts(bare.stdout) and job_counts(r.stdout)["train"] > 1


def test_the_driver_environment_is_snakemake_and_its_plugin():
    """environment.yml (conda, not run here): snakemake and the SLURM plugin at pyproject's minimum
    versions, and what the workflow imports at parse time (pydantic, PyYAML); no torch, no package
    install (the workflow reads the config models from the checkout: tests/test_driver.py)."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for name in ("snakemake", "snakemake-executor-plugin-slurm", "pydantic"):
        floor = next(r for r in project if re.match(rf"{name}(\[\w+\])?>=", r)).split(">=")[1]
        assert f"{name}>={floor}" in conda, (name, conda)
    assert "pyyaml" in conda and not [d for d in env["dependencies"] if isinstance(d, dict)]  # no pip section


def _bad_config(tmp_path, base, edit, name="bad.yaml"):
    raw = yaml.safe_load((ROOT / base).read_text())
    edit(raw)
    (tmp_path / name).write_text(yaml.safe_dump(raw))
    return tmp_path / name


@pytest.mark.parametrize("base,edit,named", [
    ("config/config.yaml", lambda c: c.update(trainig=c.pop("training")), "trainig: unknown key (did you mean training?)"),
    ("config/config.yaml", lambda c: c.update(seeds=[-1]), "seeds"),
    ("config/config.yaml", lambda c: c.update(seeds=[0, 0]), "seeds: 0 twice"),
    ("config/config.yaml", lambda c: c.update(seeds=[0, True]), "seeds[1]"),  # YAML 1.1's `yes`: not a seed 1
    ("config/config.yaml", lambda c: c["ablations"]["methods"]["egrpo"].update(tau=[2.2]), "ablations.methods.egrpo.tau"),
    ("config/config.yaml", lambda c: c["world"].update(critic_steps=0), "world.critic_steps"),
    ("config/config.yaml", lambda c: c["training"]["optim"].update(lr=-1.0), "training.optim.lr"),
    ("config/config.yaml", lambda c: c["settings"]["hps"].update(names=["world_preferance"]), "settings.hps.names[0]"),
    ("config/config.yaml", lambda c: c["metrics"].update(clip="world_alignmnt"), "metrics.clip"),
    ("config/config.yaml", lambda c: c["training"]["methods"]["egrpo"]["method"].update(active=[3, 17]),
     "training.method.active"),
    ("config/flux.yaml", lambda c: c["inputs"]["rewards"]["hpsv21"].pop("checkpoint"), "inputs.rewards.hpsv21.checkpoint"),
    ("config/flux.yaml", lambda c: c["inputs"]["rewards"].pop("clip_score"), "inputs.rewards.clip_score.checkpoint"),
    ("config/flux.yaml", lambda c: c["training"]["model"].update(path="/x"), "training.model.path"),
    ("config/flux.yaml", lambda c: c["gpus"].update(train=16), "gpus.train"),
])
def test_config_errors_are_reported_before_any_job(tmp_path, base, edit, named):
    """From the driver, as from a job: one line naming the key (not the schema and the whole config)."""
    r = smk(tmp_path, "-n", "--configfile", str(_bad_config(tmp_path, base, edit)), check=False)
    lines = (r.stderr + r.stdout).strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1 and named in lines[0], lines[-20:]


def test_a_method_with_ablations_of_its_own(tmp_path):
    """The ablated methods are data: ablating DanceGRPO's noise level plans its variant runs and a table
    of their own beside E-GRPO's, and nothing of the other methods changes."""
    config = _bad_config(tmp_path, "config/config.yaml",
                         lambda c: c["ablations"]["methods"].update(dancegrpo={"eta": [0.5, 0.7]}), "dance.yaml")
    out = smk(tmp_path, "-n", "-p", "--configfile", str(config)).stdout
    default = job_counts(smk(tmp_path, "-n", "--configfile", str(ROOT / "config/config.yaml")).stdout)
    assert job_counts(out)["train"] == default["train"] + 2
    assert "results/runs/hps/dancegrpo/eta-0.5/seed{seed}" in out and "results/tables/ablation_dancegrpo_eta.md" in out


def _finished_results(work: Path, config: Path) -> list[Path]:
    """Every file and folder the DAG of `config` writes, created with one timestamp and no
    .snakemake/metadata: a finished DAG's results copied into a fresh checkout."""
    out = smk(work, "--summary", "--configfile", str(config)).stdout
    paths = [work / line.split("\t")[0] for line in out.splitlines()[1:] if line.strip()]
    stamp = time.time()  # copied after the checkout: newer than its scripts (a script newer than its outputs reruns them)
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        if "." in path.name:
            path.touch()
        else:  # a directory() output (image folders, the world's datasets and base model)
            path.mkdir(exist_ok=True)
    for path in sorted(paths, key=lambda p: len(p.parts), reverse=True):
        os.utime(path, (stamp, stamp))
    shutil.rmtree(work / ".snakemake", ignore_errors=True)
    return paths


def test_a_config_edit_reruns_its_jobs_without_snakemakes_metadata(tmp_path):
    """Results copied to another checkout (no .snakemake/metadata, so no params trigger): a learning-rate
    edit to MixGRPO still reruns its train jobs and the reports, because every spec file a job reads is
    named by its content and the edited one does not exist yet. Nothing else reruns."""
    _finished_results(tmp_path, ROOT / "config/config.yaml")
    assert job_counts(smk(tmp_path, "-n", "--configfile", str(ROOT / "config/config.yaml")).stdout) == {}
    config = _bad_config(tmp_path, "config/config.yaml",
                         lambda c: c["training"]["methods"]["mixgrpo"].update(optim={"lr": 3e-4}), "edited.yaml")
    counts = job_counts(smk(tmp_path, "-n", "--configfile", str(config)).stdout)
    settings = len(yaml.safe_load((ROOT / "config/config.yaml").read_text())["settings"])
    assert counts.get("train") == settings and counts.get("run_config") == settings, counts
    assert counts.get("tables") == 1 and counts.get("figures") == 1 and counts.get("experiment_config") == 1, counts
    assert not {"world_build", "world_pretrain", "evaluate_base", "variance"} & set(counts), counts


def test_deleting_a_runs_outputs_retrains_it_and_rebuilds_the_tables(tmp_path):
    """With the tables present, deleting every output of one run made `snakemake` plan nothing (the
    tables kept citing the deleted run): a run's outputs are targets of their own now."""
    _finished_results(tmp_path, ROOT / "config/config.yaml")
    shutil.rmtree(tmp_path / "results/runs/hps/dancegrpo/main/seed0")
    shutil.rmtree(tmp_path / "results/eval/hps/dancegrpo/main")
    counts = job_counts(smk(tmp_path, "-n", "--configfile", str(ROOT / "config/config.yaml")).stdout)
    assert counts.get("train") == 1 and counts.get("tables") == 1 and counts.get("figures") == 1, counts
    assert "run_config" not in counts and "world_pretrain" not in counts, counts


FAKE_SBATCH = """#!/usr/bin/env bash
echo "sbatch $*" >> "{log}"
cat >> "{log}"
exit 1
"""
FAKE_OK = "#!/usr/bin/env bash\necho \"$(basename $0) $*\" >> \"{log}\"\nexit 0\n"


def _fake_slurm(tmp_path):
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for name, body in {"sbatch": FAKE_SBATCH, "sacct": FAKE_OK, "squeue": FAKE_OK, "srun": FAKE_OK,
                       "sinfo": FAKE_OK, "scontrol": FAKE_OK, "sacctmgr": FAKE_OK, "sshare": FAKE_OK}.items():
        f = bin_dir / name
        f.write_text(body.format(log=log))
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, log


@pytest.mark.parametrize("gpus", [None, 4])
def test_slurm_profile_submits_one_node_with_the_configs_gpu_count(tmp_path, gpus):
    """The GPU count has one source: the job's `gpu` resource gives sbatch's --gpus and torchrun's
    processes alike (a profile edit to 4 GPUs gives 4 ranks, not 8); training is pinned to one node."""
    env, log = _fake_slurm(tmp_path)
    target = "results/runs/hps/egrpo/main/seed0/final/meta.json"
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    profile["default-resources"]["slurm_account"] = "their_account"  # the edit the profile asks for
    if gpus:  # a user's profile edit
        profile["set-resources"]["train"]["gpu"] = gpus
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))
    extra = ["--set-resources", f"train:gpu={gpus}"] if gpus else []  # the same edit for the dry run below
    r = smk(tmp_path / "w", target, "--slurm-status-command", "sacct", "--configfile", str(ROOT / "config/flux.yaml"),
            env=env, check=False, timeout=300, profile=str(tmp_path / "profile"))
    calls = log.read_text() if log.exists() else ""
    submit = [line for line in calls.splitlines() if line.startswith("sbatch") and "rule_train" in line]
    assert submit, f"no sbatch call for train:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    n = gpus or 8
    assert f"--gpus=h100:{n}" in submit[0] and "--nodes=1" in submit[0] and "-t 2880" in submit[0], submit[0][:700]
    assert "--mem 512000" in submit[0] and "-p gpu" in submit[0], submit[0][:700]  # the rule's own memory
    assert "-A 'their_account'" in submit[0] or "-A their_account" in submit[0]
    dry = smk(tmp_path / "w", target, "-n", "-p", *extra, "--configfile", str(ROOT / "config/flux.yaml")).stdout
    assert f"torchrun --standalone --nproc-per-node {n} -m egrpo train" in dry  # the processes the job's GPUs allow
    assert not [line for line in calls.splitlines() if line.startswith("sbatch") and "rule_run_config" in line]


def _message(r) -> list[str]:
    """The lines a run printed, less Snakemake's note of the profile it loaded."""
    return [line for line in (r.stdout + r.stderr).strip().splitlines()
            if not line.startswith("Using workflow specific profile")]


def test_the_slurm_profiles_placeholder_account_stops_before_any_submission(tmp_path):
    """The shipped profile as it is: one line naming the key and the file, and no sbatch call (not
    three failed submissions of every job)."""
    env, log = _fake_slurm(tmp_path)
    # the root layout from anywhere: `--workflow-profile slurm` finds profiles/slurm beside the Snakefile
    r = smk(tmp_path / "w", "--configfile", str(ROOT / "config/flux.yaml"), env=env, check=False, timeout=300,
            profile="slurm", snakefile=ROOT / "Snakefile", cwd=tmp_path)
    assert f"Using workflow specific profile {ROOT / 'profiles/slurm'}" in r.stdout + r.stderr
    lines = _message(r)
    assert r.returncode != 0 and len(lines) == 1, lines[-20:]
    assert "slurm_account is still the placeholder 'your_account' (profiles/slurm/config.yaml)" in lines[0]
    assert "sbatch" not in (log.read_text() if log.exists() else "")


def test_the_cpu_config_under_the_slurm_profile_stops_before_any_submission(tmp_path):
    """config/config.yaml's jobs hold no GPU: sent to the profile's GPU partition, they would queue for
    GPUs they never use. One line naming the rule and what to change, before anything is submitted."""
    env, log = _fake_slurm(tmp_path)
    r = smk(tmp_path / "w", "--configfile", str(ROOT / "config/config.yaml"), "--default-resources",
            "slurm_account=their_account", env=env, check=False, timeout=300, profile=str(ROOT / "profiles/slurm"))
    lines = _message(r)
    assert r.returncode != 0 and len(lines) == 1, lines[-20:]
    assert "holds no GPU under this config" in lines[0] and "partition 'gpu'" in lines[0], lines[0]
    assert "sbatch" not in (log.read_text() if log.exists() else "")


def _resources(out: str, rule: str) -> dict[str, str]:
    block = re.split(r"^\S", out.split(f"\nrule {rule}:\n")[1], maxsplit=1, flags=re.M)[0]  # to the next job
    fields = dict(re.findall(r"^\s+(threads|resources): (.*)$", block, re.M))
    res = dict(kv.split("=", 1) for kv in fields["resources"].split(", "))
    return {**res, "threads": fields.get("threads", "1")}


def test_rules_carry_their_own_memory_time_and_threads_scaled_by_attempt(tmp_path):
    """Each rule declares mem_mb and runtime (no profile needed), a retry asks for more (a training job
    keeps its node's memory), and a GPU job holds 8 CPU threads per GPU (evaluation and rendering too)."""
    def plan(*args):
        return smk(tmp_path, "results/eval/base.csv", "results/runs/hps/egrpo/main/seed0/final/meta.json",
                   "results/qualitative/images", "-n", "--cores", "64", *args, "--configfile",
                   str(ROOT / "config/flux.yaml")).stdout
    first, second = plan(), plan("--attempt", "2")
    for rule, mem, minutes, threads in [("evaluate_base", 96000, 240, 8), ("qualitative_images", 96000, 120, 8),
                                        ("train", 512000, 2880, 64)]:
        a, b = _resources(first, rule), _resources(second, rule)
        assert (int(a["mem_mb"]), int(a["runtime"]), int(a["threads"])) == (mem, minutes, threads), (rule, a)
        assert int(b["runtime"]) == 2 * minutes and int(b["mem_mb"]) == (mem if rule == "train" else 2 * mem)
    world = smk(tmp_path, "-n", "--configfile", str(ROOT / "config/config.yaml"), "--attempt", "2").stdout
    assert int(_resources(world, "world_pretrain")["runtime"]) == 2 * int(
        _resources(smk(tmp_path, "-n", "--configfile", str(ROOT / "config/config.yaml")).stdout,
                   "world_pretrain")["runtime"])


def test_both_profiles_show_a_failed_jobs_log():
    for profile in ("default", "slurm"):
        assert yaml.safe_load((ROOT / "profiles" / profile / "config.yaml").read_text())["show-failed-logs"] is True


@pytest.fixture(scope="module")
def tiny_dag(tmp_path_factory):
    """One end-to-end run of the tiny test config (every table and figure)."""
    work = tmp_path_factory.mktemp("dag")
    smk(work, "--cores", "2", "--configfile", str(TEST_CONFIG), timeout=1200)
    return work


def test_end_to_end_tiny_config_writes_every_table_and_figure(tiny_dag):
    res = tiny_dag / "results"
    for s in ("hps", "hps_clip"):
        table = (res / "tables" / f"table1_{s}.md").read_text()
        for row in ("Base model", "E-GRPO", "DanceGRPO", "MixGRPO"):
            assert row in table
        assert "paper's ordering on hps" in table and "gain over base" in table and "reward at equal compute" in table
        for ext in ("csv", "tex"):
            assert (res / "tables" / f"table1_{s}.{ext}").stat().st_size > 0
    for t in ("table2_merge", "table3_steps", "table4_tau"):
        assert "(main)" in (res / "tables" / f"{t}.md").read_text()
    comparisons = (res / "tables" / "comparisons.csv").read_text()
    assert "gain over the base model" in comparisons and "main row is best" in comparisons
    for f in ("fig1b_entropy", "fig1a_variance", "fig4_reward_curves", "fig5_qualitative", "tau_ablation"):
        assert (res / "figures" / f"{f}.png").stat().st_size > 1000 and (res / "figures" / f"{f}.pdf").exists()
    prov = (res / "runs/hps/egrpo/main/seed0/provenance.json").read_text()
    assert "config_hash" in prov and "git_commit" in prov
    assert not list(res.parent.glob("benchmarks"))  # Snakemake's benchmark files go under logs/


def test_an_edit_reruns_exactly_the_runs_it_changes(tiny_dag):
    """A learning-rate edit to MixGRPO reruns MixGRPO's two train jobs (and the reports), nothing else;
    the rerun starts those runs afresh and their table rows change."""
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["training"]["methods"]["mixgrpo"]["optim"] = {"lr": 3e-4}
    (tiny_dag / "edited.yaml").write_text(yaml.safe_dump(cfg))
    counts = job_counts(smk(tiny_dag, "-n", "--configfile", str(tiny_dag / "edited.yaml")).stdout)
    assert counts["train"] == 2 and counts["run_config"] == 2, counts
    import pandas as pd

    before = pd.read_csv(tiny_dag / "results/tables/table1_hps.csv").set_index("row")
    smk(tiny_dag, "--cores", "2", "--configfile", str(tiny_dag / "edited.yaml"))
    log = (tiny_dag / "logs/train/hps/mixgrpo/main/seeds.log").read_text()
    assert "starting afresh" in log and "resuming" not in log
    run_cfg = json.loads((tiny_dag / "results/runs/hps/mixgrpo/main/seed0/config.json").read_text())
    assert run_cfg["optim"]["lr"] == 3e-4
    after = pd.read_csv(tiny_dag / "results/tables/table1_hps.csv").set_index("row")
    assert before.loc["MixGRPO", "hps"] != after.loc["MixGRPO", "hps"]
    assert before.loc["E-GRPO", "hps"] == after.loc["E-GRPO", "hps"]


def test_killed_train_job_resumes_from_checkpoint(tiny_dag):
    """Kill a running train job (as a SLURM time limit or Ctrl-C would), start Snakemake again: the job
    resumes each of its seeds from its last checkpoint instead of starting over."""
    cfg = TEST_CONFIG.read_text().replace("iterations: 2", "iterations: 100")
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
    meta = run_dir / "checkpoints" / "last" / "meta.json"
    deadline = time.time() + 300
    while not meta.exists() and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C to the whole process group, at the first checkpoint
    proc.wait(timeout=60)
    out.close()
    rows = len((run_dir / "log.jsonl").read_text().splitlines()) if (run_dir / "log.jsonl").exists() else 0
    assert meta.exists() and not (run_dir / "final" / "meta.json").exists(), (
        f"the killed job finished anyway ({rows} iterations logged):\n"
        + (tiny_dag / "killed_run.out").read_text()[-3000:])
    smk(tiny_dag, target, "--cores", "1", "--configfile", str(tiny_dag / "long.yaml"))
    log = (tiny_dag / "logs/train/hps/dancegrpo/main/seeds.log").read_text()
    assert "resuming from the checkpoint at iteration" in log
    for seed in (0, 1):
        done = tiny_dag / f"results/runs/hps/dancegrpo/main/seed{seed}/final/log.jsonl"
        assert [json.loads(line)["iteration"] for line in done.read_text().splitlines()] == list(range(100))


def test_power_projects_the_runs_seeds(tiny_dag):
    """`egrpo power` (a subcommand, as every entry point) reads the DAG's configs and results."""
    r = subprocess.run([sys.executable, "-m", "egrpo", "power", "--configfile", str(TEST_CONFIG), "--workdir",
                        str(tiny_dag), "--prompts", "288"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| table1_hps | E-GRPO > Base model |" in r.stdout and "(288 prompts)" in r.stdout


REPORT_TABLES = ["table1_hps", "table1_hps_clip", "table2_merge", "table3_steps", "table4_tau"]


@pytest.fixture(scope="module")
def report(tiny_dag):
    """The HTML report of the tiny DAG and the results it embeds (path -> name, mime type, data URI...)."""
    smk(tiny_dag, "--report", "report.html", "--configfile", str(TEST_CONFIG))
    html = (tiny_dag / "report.html").read_text()
    results = json.loads(re.search(r"var results = (\{.*?\});\n", html).group(1))
    categories = json.loads(re.search(r"var categories = (\{.*?\});\n", html).group(1))
    return tiny_dag / "report.html", results, categories


def _embedded(entry) -> str:
    import base64

    return base64.b64decode(entry["data_uri"].split("base64,", 1)[1]).decode()


def test_report_shows_every_table_inline_with_the_claims_configs_and_provenance(tiny_dag, report):
    """Every table is an HTML page (what the report frames inline) holding the Markdown table's rows;
    the claims page every claim; the configs and provenance pages every run; the figures beside."""
    from conftest import html_tables, markdown_table
    from egrpo.experiment import Experiment

    _, results, categories = report
    pages = {f"results/tables/{t}.html": "Tables" for t in REPORT_TABLES + ["comparisons"]}
    pages |= {"results/tables/configs.html": "Provenance", "results/tables/provenance.html": "Provenance"}
    for path, category in pages.items():
        assert results[path]["mime_type"] == "text/html" and path in categories[category]["Other"], path
    for t in REPORT_TABLES:
        (cells,) = html_tables(_embedded(results[f"results/tables/{t}.html"]))
        md = markdown_table((tiny_dag / "results/tables" / f"{t}.md").read_text())
        assert [r[0] for r in cells] == [r[0] for r in md] and len(cells[0]) == len(md[0]) and len(cells) > 2, t
    claims = (tiny_dag / "results/tables/comparisons.csv").read_text().count("\n") - 1
    assert sum(len(t) - 1 for t in html_tables(_embedded(results["results/tables/comparisons.html"]))) == claims
    exp = Experiment.load(yaml.safe_load(TEST_CONFIG.read_text()))
    configs = _embedded(results["results/tables/configs.html"])
    assert all(f"<td>{'/'.join(c)}</td>" in configs for c in exp.configurations)
    provenance = _embedded(results["results/tables/provenance.html"])
    assert all(f"<td>{r.setting}/{r.method}/{r.variant}/seed{r.seed}</td>" in provenance for r in exp.runs)
    assert "git_commit" in provenance
    figures = ["fig1a_variance", "fig1b_entropy", "fig4_reward_curves", "fig5_qualitative", "tau_ablation"]
    assert sorted(categories["Figures"]["Other"]) == [f"results/figures/{f}.png" for f in figures]


def _browser():
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(_browser() is None, reason="no headless browser (apt-get install chromium) to render the report")
def test_report_renders_each_table_in_a_browser(report, tmp_path):
    """The report opened in headless Chromium on each table (as a click on it does): the page in its
    frame is drawn, its header row's colour shows in the content pane; screenshots kept in tmp_path."""
    from PIL import Image

    path, results, _ = report
    html = path.read_text()
    header = (223, 230, 238)  # the tables' header background (egrpo.report_pages.STYLE), in no Snakemake view
    for t in REPORT_TABLES + ["comparisons", "configs", "provenance"]:
        key = f"results/tables/{t}.html"
        # open the result as the report's own click handler does (App.setView)
        view = ("<script>window.addEventListener('load', () => setTimeout(() => app.setView({content: 'html', "
                f"contentPath: results[{json.dumps(key)}].data_uri, resultPath: {json.dumps(key)}}}), 100));</script>")
        page = tmp_path / f"{t}.report.html"
        end = html.rindex("</body>")  # the document's own (the embedded libraries' code holds the string too)
        page.write_text(html[:end] + view + html[end:])
        shot = tmp_path / f"{t}.png"
        r = subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            "--virtual-time-budget=10000", "--window-size=1600,1000", f"--screenshot={shot}",
                            page.as_uri()], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
        image = Image.open(shot).convert("RGB")
        content = image.crop((400, 0, image.width, image.height))  # right of the report's navigation bar
        pixels = sum(1 for p in content.get_flattened_data() if p == header)
        assert pixels > 2000, (t, pixels, shot)  # a header row drawn: the table is on screen


def test_every_gpu_rule_resolves_to_this_ranks_gpu(tmp_path, monkeypatch):
    """Each rule that holds a GPU takes its device from the job: `--device auto` (evaluation, the
    qualitative grid, Fig. 1a's variance) or a run config with model.device auto (training), and auto
    is cuda:LOCAL_RANK when CUDA is available (mocked here)."""
    import torch

    from egrpo import distributed as dist

    out = smk(tmp_path, "-n", "-p", "--configfile", str(ROOT / "config/flux.yaml")).stdout
    for command in ("egrpo evaluate --run", "egrpo evaluate --model", "egrpo render", "egrpo variance"):
        lines = [line for line in out.splitlines() if command in line]
        assert lines and all("--device auto" in line for line in lines), command
    cfg = yaml.safe_load((ROOT / "config/flux.yaml").read_text())["training"]
    assert cfg["model"].get("device", "auto") == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "5")
    assert dist.local_device("auto") == torch.device("cuda", 5)
