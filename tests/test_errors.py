"""Bad input gets one clear line and exit status 2: a table of every faulty input a user can hand the
CLI, each driven through `egrpo.cli.main` (the entry point of `egrpo`), asserting the line names the
file or the config key."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import tiny_run_config
from egrpo.cli import main


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_flux_dir):
    """A tiny run config, a finished 2-iteration run (checkpoint kept) and its evaluation protocol."""
    d = tmp_path_factory.mktemp("errors")
    raw = tiny_run_config(tiny_flux_dir, "dancegrpo", train={"iterations": 2, "checkpoint_every": 1})
    (d / "run.yaml").write_text(yaml.safe_dump(raw))
    assert main(["train", "--config", str(d / "run.yaml"), "--method", "dancegrpo", "--out", str(d / "run"),
                 "--no-progress"]) == 0
    (d / "p.txt").write_text("a red circle\na cat\n")
    protocol = {"prompts": str(d / "p.txt"), "metrics": {"hps": {"reward": "brightness"}},
                "sampler": {"num_steps": 2, "height": 32, "width": 32}, "max_sequence_length": 16}
    (d / "eval.json").write_text(json.dumps(protocol))
    return {"dir": d, "raw": raw, "flux": Path(tiny_flux_dir), "protocol": protocol}


def _config(env, name, **changes):
    raw = json.loads(json.dumps(env["raw"]))
    for key, value in changes.items():
        section, field = key.split("__")
        raw.setdefault(section, {})[field] = value
    path = env["dir"] / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _train(env, config, *extra, out=None):
    return ["train", "--config", str(config), "--method", "dancegrpo", "--out", str(out or env["dir"] / "x"),
            "--no-progress", *extra]


def _copy_run(env, name):
    """A copy of the finished run whose checkpoint the case then damages; the config asks for one more
    iteration, so the command resumes from it."""
    run = env["dir"] / name
    shutil.copytree(env["dir"] / "run", run)
    return run, _config(env, f"{name}_more", train__iterations=3)


def _file(env, name: str, data: bytes) -> Path:
    path = env["dir"] / name
    path.write_bytes(data)
    return path


def prompt_missing(env):
    return _train(env, _config(env, "pm", train__prompts=str(env["dir"] / "nope.txt"))), "nope.txt"


def prompt_empty(env):
    path = _file(env, "empty.txt", b"\n\n")
    return _train(env, _config(env, "pe", train__prompts=str(path))), "empty.txt"


def prompt_not_utf8(env):
    path = _file(env, "latin1.txt", "a café sign\n".encode("latin-1"))
    return _train(env, _config(env, "pu", train__prompts=str(path))), "latin1.txt"


def prompt_unknown_suffix(env):
    path = _file(env, "prompts.xlsx", b"a red circle\n")
    return _train(env, _config(env, "ps", train__prompts=str(path))), "prompts.xlsx"


def unknown_reward(env):
    return _train(env, _config(env, "ur", rewards__names=["brightnes"])), "brightnes"


def config_yaml_syntax(env):
    return _train(env, _file(env, "broken.yaml", b"model: {path: [\n")), "broken.yaml"


def set_yaml_syntax(env):
    return _train(env, _config(env, "sy"), "--set", "optim.lr=[1,"), "optim.lr"


def set_section_to_scalar(env):
    return _train(env, _config(env, "ss"), "--set", "model=3"), "model"


def config_is_a_list(env):
    return _train(env, _file(env, "list.yaml", b"- model\n- train\n")), "list.yaml"


def checkpoint_truncated(env):
    run, config = _copy_run(env, "trunc")
    shard = next((run / "checkpoints" / "last").glob("__0_*.distcp"))
    shard.write_bytes(shard.read_bytes()[:100])
    return _train(env, config, out=run), shard.name


def checkpoint_empty(env):
    run, config = _copy_run(env, "empty_ckpt")
    (run / "checkpoints" / "last" / "meta.json").write_text("")
    return _train(env, config, out=run), "meta.json"


def checkpoint_corrupt(env):
    run, config = _copy_run(env, "corrupt")
    shard = next((run / "checkpoints" / "last").glob("__0_*.distcp"))
    data = bytearray(shard.read_bytes())
    data[-200] ^= 0xFF
    shard.write_bytes(bytes(data))
    return _train(env, config, out=run), shard.name


def checkpoint_index_not_metadata(env):
    """A run directory from elsewhere whose checkpoint index would run code when unpickled."""
    import pickle

    run, config = _copy_run(env, "evil")
    index = run / "checkpoints" / "last" / ".metadata"
    index.write_bytes(pickle.dumps(os.system))
    meta = json.loads((index.parent / "meta.json").read_text())
    import hashlib

    meta["files"][".metadata"] = hashlib.sha256(index.read_bytes()).hexdigest()
    (index.parent / "meta.json").write_text(json.dumps(meta))
    return _train(env, config, out=run), ".metadata"


def _model_copy(env, name):
    model = env["dir"] / name
    shutil.copytree(env["flux"], model)
    return model


def model_config_corrupt(env):
    model = _model_copy(env, "bad_config")
    (model / "transformer" / "config.json").write_text("{")
    return _train(env, _config(env, "mc", model__path=str(model))), "bad_config"


def model_weights_corrupt(env):
    model = _model_copy(env, "bad_weights")
    weights = model / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    return _train(env, _config(env, "mw", model__path=str(model))), "bad_weights"


def trained_weights_do_not_fit(env):
    from safetensors.torch import save_file
    import torch

    run = env["dir"] / "misfit"
    shutil.copytree(env["dir"] / "run", run)
    for weights in ("trainable.safetensors", "transformer/diffusion_pytorch_model.safetensors"):  # one file in a run
        save_file({"transformer_blocks.0.attn.to_q.weight": torch.zeros(3, 3)}, str(run / "final" / weights))
    return ["evaluate", "--run", str(run), "--protocol", str(env["dir"] / "eval.json"),
            "--out", str(env["dir"] / "m.csv")], "do not fit"


def protocol_not_json(env):
    path = _file(env, "bad_eval.json", b'{"prompts": ')
    return ["evaluate", "--model", str(env["flux"]), "--protocol", str(path), "--out", str(env["dir"] / "e.csv")], \
        "bad_eval.json"


def protocol_unknown_sampler_key(env):
    path = env["dir"] / "eval_key.json"
    path.write_text(json.dumps({**env["protocol"], "sampler": {"steps": 3}}))
    return ["evaluate", "--model", str(env["flux"]), "--protocol", str(path), "--out", str(env["dir"] / "e.csv")], \
        "sampler.steps"


def protocol_unknown_reward(env):
    path = env["dir"] / "eval_reward.json"
    path.write_text(json.dumps({**env["protocol"], "metrics": {"hps": {"reward": "hsp"}}}))
    return ["evaluate", "--model", str(env["flux"]), "--protocol", str(path), "--out", str(env["dir"] / "e.csv")], \
        "metrics.hps"


def reward_precision_unknown(env):
    return _train(env, _config(env, "rp", rewards__precision="half")), "rewards.precision"


def reward_precision_in_options(env):
    return _train(env, _config(env, "ro", rewards__options={"brightness": {"precision": "bf16"}})), "precision"


def protocol_bad_score_text(env):
    path = env["dir"] / "eval_text.json"
    path.write_text(json.dumps({**env["protocol"], "score_text": "file"}))
    return ["evaluate", "--model", str(env["flux"]), "--protocol", str(path), "--out", str(env["dir"] / "e.csv")], \
        "score_text"


def _variance_spec(env, name, run=None, **changes):
    """A Fig. 1a spec (what the DAG writes to results/configs/variance/) with `changes`."""
    run = run or {**json.loads((env["dir"] / "run" / "config.json").read_text()),
                  "method": {"name": "egrpo", "num_steps": 8, "group_size": 4, "active": "first4", "granularities": [1]}}
    spec = {"run": run, "prompts": str(env["dir"] / "p.txt"), "metric": {"reward": "brightness"}, **changes}
    path = env["dir"] / f"{name}.json"
    path.write_text(json.dumps(spec))
    return ["variance", "--config", str(path), "--out", str(env["dir"] / "v.csv")]


def variance_not_merging(env):
    run = json.loads((env["dir"] / "run" / "config.json").read_text())  # a DanceGRPO run config
    return _variance_spec(env, "v_dance", run=run), "E-GRPO"


def protocol_bad_determinism(env):
    path = env["dir"] / "eval_det.json"
    path.write_text(json.dumps({**env["protocol"], "determinism": {"cpu": "avx512"}}))
    return ["evaluate", "--model", str(env["flux"]), "--protocol", str(path), "--out", str(env["dir"] / "e.csv")], \
        "determinism.cpu"


def config_bad_determinism(env):
    return _train(env, _config(env, "det", determinism__threads=0)), "determinism.threads"


def train_protocol_of_another_determinism(env):
    path = env["dir"] / "eval_portable.json"
    path.write_text(json.dumps({**env["protocol"], "determinism": {"cpu": "portable"}}))
    return _train(env, _config(env, "det_ok"), "--evaluate", str(path), "--eval-out", str(env["dir"] / "d.csv")), \
        "one process runs one setting"


def variance_bad_group(env):
    return _variance_spec(env, "v_group", group_size=1), "group_size"


def variance_bad_metric(env):
    return _variance_spec(env, "v_metric", metric={"reward": "brightnes"}), "metric.reward"


def entropy_bad_steps(env):
    return ["entropy", "--set", "method.num_steps=0", "--out", str(env["dir"] / "h.csv")], "method.num_steps"


def world_build_bad_steps(env):
    return ["world", "build", "--out", str(env["dir"] / "w"), "--set", "critic_steps=0"], "critic_steps"


def set_yaml11_boolean(env):
    """YAML 1.1's `yes` is not read as 1 (nor `off` as 0): values are YAML 1.2."""
    return _train(env, _config(env, "yb"), "--set", "train.iterations=yes"), "train.iterations"


CASES = [prompt_missing, prompt_empty, prompt_not_utf8, prompt_unknown_suffix, unknown_reward, config_yaml_syntax,
         set_yaml_syntax, set_section_to_scalar, config_is_a_list, checkpoint_truncated, checkpoint_empty,
         checkpoint_corrupt, checkpoint_index_not_metadata, model_config_corrupt, model_weights_corrupt,
         trained_weights_do_not_fit, protocol_not_json, protocol_unknown_sampler_key, protocol_unknown_reward,
         reward_precision_unknown, reward_precision_in_options, protocol_bad_score_text,
         variance_not_merging, variance_bad_group, variance_bad_metric, entropy_bad_steps, world_build_bad_steps,
         set_yaml11_boolean, protocol_bad_determinism, config_bad_determinism, train_protocol_of_another_determinism]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_is_one_line_exit_2_naming_it(env, case, capsys):
    args, named = case(env)
    capsys.readouterr()
    assert main(args) == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("egrpo: error:")]
    assert len(lines) == 1 and named in lines[0], lines


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB filesystem: room for a run's config and log, not for its checkpoint."""
    mount = tmp_path / "disk"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip()})")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_names_the_path_and_keeps_the_last_checkpoint(env, tiny_disk, capsys):
    raw = _config(env, "disk")
    capsys.readouterr()
    assert main(_train(env, raw, out=tiny_disk / "run")) == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("egrpo: error:")]
    assert len(lines) == 1 and "no space left" in lines[0] and str(tiny_disk) in lines[0], lines
    assert not list((tiny_disk / "run" / "checkpoints").glob("*.tmp"))  # the failed write is cleaned up
