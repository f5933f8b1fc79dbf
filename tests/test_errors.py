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


def _run_copy(env, name) -> Path:
    """A fresh copy of the finished run, for a case to damage."""
    run = env["dir"] / name
    shutil.rmtree(run, ignore_errors=True)  # a case may run twice (its early check)
    shutil.copytree(env["dir"] / "run", run)
    return run


def _copy_run(env, name):
    """A copy of the finished run whose checkpoint the case then damages; the config asks for one more
    iteration, so the command resumes from it."""
    return _run_copy(env, name), _config(env, f"{name}_more", train__iterations=3)


def _record_base(run: Path, model: Path) -> None:
    """Point the run's export at another base model directory."""
    meta = json.loads((run / "final" / "meta.json").read_text())
    meta.update(base=str(model), base_relative=os.path.relpath(model, run / "final"))
    (run / "final" / "meta.json").write_text(json.dumps(meta))


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
    shutil.rmtree(model, ignore_errors=True)
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

    run = _run_copy(env, "misfit")
    for weights in ("trainable.safetensors", "transformer/diffusion_pytorch_model.safetensors"):  # one file in a run
        save_file({"transformer_blocks.0.attn.to_q.weight": torch.zeros(3, 3)}, str(run / "final" / weights))
    _rehash(run)  # a faulty export, its checksums recorded as written
    return ["evaluate", "--run", str(run), "--protocol", str(env["dir"] / "eval.json"),
            "--out", str(env["dir"] / "m.csv")], "do not fit"


def _rehash(run: Path) -> None:
    """Record the export's files' current checksums in its meta.json (an export written wrong, not one
    replaced afterwards)."""
    from egrpo.digest import file_digest

    path = run / "final" / "meta.json"
    meta = json.loads(path.read_text())
    meta["files"] = {name: file_digest(run / "final" / name) for name in meta["files"]}
    meta["weights_sha256"] = meta["files"]["trainable.safetensors"]
    path.write_text(json.dumps(meta))


def _edit_weights(path: Path, edit) -> None:
    """Rewrite a safetensors file with `edit(state_dict)` applied (a new file: the original's hard links keep it)."""
    from safetensors.torch import load_file, save_file

    sd = load_file(str(path))
    edit(sd)
    path.unlink()
    save_file(sd, str(path))


def _protocol(env, name: str, **edit) -> Path:
    """The test protocol with `edit`'s top-level keys replaced, written to eval_<name>.json."""
    path = env["dir"] / f"eval_{name}.json"
    path.write_text(json.dumps({**env["protocol"], **edit}))
    return path


def _evaluate_run(env, run, **protocol):
    return ["evaluate", "--run", str(run), "--protocol", str(_protocol(env, run.name, **protocol)),
            "--out", str(env["dir"] / f"{run.name}.csv")]


def _evaluate_model(env, name: str, **protocol):
    """`egrpo evaluate` of the base model under the test protocol edited as `protocol` says."""
    return ["evaluate", "--model", str(env["flux"]), "--protocol", str(_protocol(env, name, **protocol)),
            "--out", str(env["dir"] / "e.csv")]


def trained_weights_replaced(env):
    """Another run's weights copied into final/: the file is not the one meta.json's checksum records."""
    run = _run_copy(env, "replaced")
    for name in ("trainable.safetensors", "transformer/diffusion_pytorch_model.safetensors"):
        _edit_weights(run / "final" / name, lambda sd: sd.update({k: v + 1 for k, v in list(sd.items())[:1]}))
    return _evaluate_run(env, run), "is not the run's export"


def trained_weights_missing_a_tensor(env):
    """An export without one block's weights must not load the base's for it (strict=False did)."""
    run = _run_copy(env, "missing_block")
    for name in ("trainable.safetensors", "transformer/diffusion_pytorch_model.safetensors"):
        _edit_weights(run / "final" / name, lambda sd: sd.pop(sorted(sd)[0]))
    _rehash(run)
    return _evaluate_run(env, run), "1 missing, e.g. ["


def base_model_replaced(env):
    """A base model of the same architecture but other weights where the run's base was."""
    run = _run_copy(env, "other_base")
    model = _model_copy(env, "other_base_model")
    _edit_weights(model / "vae" / "diffusion_pytorch_model.safetensors",
                  lambda sd: sd.update({k: v * 0.5 for k, v in list(sd.items())[:1]}))
    _record_base(run, model)
    return _evaluate_run(env, run), "vae/diffusion_pytorch_model.safetensors has sha256"


def base_model_config_changed(env):
    """The base's weights as recorded, but its scheduler's shift changed: the digest covers the configs too."""
    run = _run_copy(env, "base_config_changed")
    model = _model_copy(env, "base_config_changed_model")
    path = model / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "shift": 2.0}))
    _record_base(run, model)
    return _evaluate_run(env, run), "scheduler/scheduler_config.json has sha256"


def protocol_not_json(env):
    path = _file(env, "bad_eval.json", b'{"prompts": ')
    return ["evaluate", "--model", str(env["flux"]), "--protocol", str(path), "--out", str(env["dir"] / "e.csv")], \
        "bad_eval.json"


def protocol_unknown_sampler_key(env):
    return _evaluate_model(env, "key", sampler={"steps": 3}), "sampler.steps"


def protocol_unknown_reward(env):
    return _evaluate_model(env, "reward", metrics={"hps": {"reward": "hsp"}}), "metrics.hps"


def reward_precision_unknown(env):
    return _train(env, _config(env, "rp", rewards__precision="half")), "rewards.precision"


def reward_precision_in_options(env):
    return _train(env, _config(env, "ro", rewards__options={"brightness": {"precision": "bf16"}})), "precision"


def protocol_bad_score_text(env):
    return _evaluate_model(env, "text", score_text="file"), "score_text"


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
    return _evaluate_model(env, "det", determinism={"cpu": "avx512"}), "determinism.cpu"


def config_bad_determinism(env):
    return _train(env, _config(env, "det", determinism__threads=0)), "determinism.threads"


def train_protocol_of_another_determinism(env):
    path = _protocol(env, "portable", determinism={"cpu": "portable"})
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


def seed_twice(env):
    """`--seed 0 0`: one run counted as two seeds."""
    return _train(env, _config(env, "s2"), "--seed", "0", "0", out=env["dir"] / "s2_{seed}"), "--seed: 0 twice"


def reward_option_misspelt(env):
    config = _config(env, "rom", rewards__names=["channel"])
    return _train(env, config, "--set", "rewards.options.channel.chanel=2"), "rewards.options.channel.chanel"


def reward_option_mistyped(env):
    config = _config(env, "rot", rewards__names=["channel"])
    return _train(env, config, "--set", "rewards.options.channel.channel=red"), "rewards.options.channel.channel"


def reward_option_out_of_range(env):
    config = _config(env, "ror", rewards__names=["channel"])
    return _train(env, config, "--set", "rewards.options.channel.channel=3"), "rewards.options.channel.channel"


def reward_options_of_a_reward_not_trained(env):
    return _train(env, _config(env, "ron"), "--set", "rewards.options.channel.channel=1"), "rewards.options.channel"


def metric_option_misspelt(env):
    return _evaluate_model(env, "option", metrics={"red": {"reward": "channel", "options": {"chanel": 0}}}), \
        "metrics.red.options.chanel"


def set_off_is_not_zero(env):
    """YAML 1.1's `off` is not 0 (a LoRA rank of 0 is a full fine-tune)."""
    return _train(env, _config(env, "off"), "--set", "model.lora_rank=off"), "model.lora_rank"


def config_true_is_not_one(env):
    """A YAML `true` in a config file where a number is meant (pydantic would read 1)."""
    return _train(env, _config(env, "true1", train__iterations=True)), "train.iterations"


def lr_overflows_float32(env):
    return _train(env, _config(env, "lr39"), "--set", "optim.lr=1e39"), "optim.lr"


def lr_overflows_in_adamw(env):
    """Within float32's range, but AdamW's bias-corrected first step (lr / (1 - beta1)) is not."""
    return _train(env, _config(env, "lr38"), "--set", "optim.lr=1e38"), "optim.lr"


def lr_infinite(env):
    return _train(env, _config(env, "lrinf"), "--set", "optim.lr=.inf"), "optim.lr"


def _odd_size(env) -> int:
    from egrpo.flux import image_multiple

    return 32 + image_multiple(env["flux"]) // 2


def image_height_not_a_multiple(env):
    return _train(env, _config(env, "h", model__height=_odd_size(env))), "model.height"


def eval_image_width_not_a_multiple(env):
    return _evaluate_model(env, "size", sampler={**env["protocol"]["sampler"], "width": _odd_size(env)}), \
        "sampler.width"


def prompt_outside_the_worlds_captions(env):
    config = _config(env, "wc", rewards__names=["world_preference"],
                     train__prompts=["a red circle at the top left", "a cat"])
    return _train(env, config), "'a cat'"


def eval_prompt_outside_the_worlds_captions(env):
    return _evaluate_model(env, "world", metrics={"align": {"reward": "world_alignment"}}), "protocol prompts"


def eval_limit_negative(env):
    return ["evaluate", "--model", str(env["flux"]), "--protocol", str(env["dir"] / "eval.json"), "--set", "limit=-1",
            "--out", str(env["dir"] / "e.csv")], "limit"


def eval_limit_past_the_prompts(env):
    return ["evaluate", "--model", str(env["flux"]), "--protocol", str(env["dir"] / "eval.json"), "--set", "limit=3",
            "--out", str(env["dir"] / "e.csv")], "limit: 3"


def train_out_is_a_file(env):
    return _train(env, _config(env, "of"), out=_file(env, "out_file", b"x")), "is a file"


def train_out_below_a_file(env):
    return _train(env, _config(env, "obf"), out=_file(env, "out_parent", b"x") / "run"), "out_parent is a file"


def eval_out_is_a_folder(env):
    (env["dir"] / "eval_folder").mkdir(exist_ok=True)
    return ["evaluate", "--model", str(env["flux"]), "--protocol", str(env["dir"] / "eval.json"),
            "--out", str(env["dir"] / "eval_folder")], "is a folder"


def checkpoint_of_another_base_content(env):
    """The base model edited in place (same path) between a run's checkpoint and its resume: the
    checkpoint is another config's, not resumed on a base it was not trained from."""
    model = _model_copy(env, "edited_in_place")
    run = env["dir"] / "edited_base_run"
    shutil.rmtree(run, ignore_errors=True)
    assert main(_train(env, _config(env, "eb", model__path=str(model)), out=run)) == 0
    _edit_weights(model / "transformer" / "diffusion_pytorch_model.safetensors",
                  lambda sd: sd.update({k: v * 0.5 for k, v in list(sd.items())[:1]}))
    return _train(env, _config(env, "eb_more", model__path=str(model), train__iterations=3), out=run), \
        "model.path's content (transformer/diffusion_pytorch_model.safetensors has sha256"


def lora_export_missing_an_adapter(env):
    """A LoRA export without one adapter must not load the base's (untrained) weights for it."""
    run = env["dir"] / "lora_missing"
    shutil.rmtree(run, ignore_errors=True)
    assert main(_train(env, _config(env, "lora", model__lora_rank=2), out=run)) == 0
    _edit_weights(run / "final" / "trainable.safetensors", lambda sd: sd.pop(sorted(sd)[0]))
    _rehash(run)
    return _evaluate_run(env, run), "1 missing, e.g. ["


def reward_weights_missing(env):
    """A reward model's weights not where the options say: named before the backbone loads."""
    config = _config(env, "rw", rewards__names=["hpsv21"],
                     rewards__options={"hpsv21": {"checkpoint": str(env["dir"] / "HPS_v2.1_compressed.pt")}})
    return _train(env, config), "HPS_v2.1_compressed.pt"


def reward_weights_unset(env):
    return _train(env, _config(env, "ru", rewards__names=["hpsv21"])), "rewards.options.hpsv21.checkpoint"


def world_build_out_is_a_file(env):
    return ["world", "build", "--out", str(_file(env, "world_file", b"x"))], "world_file"


CASES = [prompt_missing, prompt_empty, prompt_not_utf8, prompt_unknown_suffix, unknown_reward, config_yaml_syntax,
         set_yaml_syntax, set_section_to_scalar, config_is_a_list, checkpoint_truncated, checkpoint_empty,
         checkpoint_corrupt, checkpoint_index_not_metadata, model_config_corrupt, model_weights_corrupt,
         trained_weights_do_not_fit, protocol_not_json, protocol_unknown_sampler_key, protocol_unknown_reward,
         reward_precision_unknown, reward_precision_in_options, protocol_bad_score_text,
         variance_not_merging, variance_bad_group, variance_bad_metric, entropy_bad_steps, world_build_bad_steps,
         set_yaml11_boolean, protocol_bad_determinism, config_bad_determinism, train_protocol_of_another_determinism,
         trained_weights_replaced, trained_weights_missing_a_tensor, base_model_replaced,
         base_model_config_changed, seed_twice, reward_option_misspelt, reward_option_mistyped,
         reward_option_out_of_range, reward_options_of_a_reward_not_trained, metric_option_misspelt,
         set_off_is_not_zero, config_true_is_not_one, lr_overflows_float32, lr_overflows_in_adamw, lr_infinite,
         image_height_not_a_multiple, eval_image_width_not_a_multiple, prompt_outside_the_worlds_captions,
         eval_prompt_outside_the_worlds_captions, eval_limit_negative, eval_limit_past_the_prompts,
         train_out_is_a_file, train_out_below_a_file, eval_out_is_a_folder, world_build_out_is_a_file,
         reward_weights_missing, reward_weights_unset]
# the cases of issue 24 whose input is knowable before any work: reported before any model loads
EARLY = CASES[CASES.index(trained_weights_replaced):]
# found when the checkpoint is read, after the model loads; or the case trains a run of its own first
CASES += [checkpoint_of_another_base_content, lora_export_missing_an_adapter]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_is_one_line_exit_2_naming_it(env, case, capsys):
    args, named = case(env)
    capsys.readouterr()
    assert main(args) == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("egrpo: error:")]
    assert len(lines) == 1 and named in lines[0], lines


@pytest.mark.parametrize("case", EARLY, ids=[c.__name__ for c in EARLY])
def test_knowable_bad_input_is_reported_before_any_model_loads(env, case, capsys, monkeypatch):
    from egrpo.flux import FluxBackbone

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr(FluxBackbone, "from_pretrained", refuse)
    args, named = case(env)
    capsys.readouterr()
    assert main(args) == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("egrpo: error:")]
    assert len(lines) == 1 and named in lines[0], lines


def _tmpfs(folder: Path, options: str, what: str):
    """Mount a tmpfs with `options` on `folder` for one test (skipped where mounting is not allowed)."""
    folder.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount {what} here ({r.stderr.strip()})")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB filesystem: room for a run's config and log, not for its checkpoint."""
    yield from _tmpfs(tmp_path / "disk", "size=256k", "a small tmpfs")


def test_a_full_disk_names_the_path_and_keeps_the_last_checkpoint(env, tiny_disk, capsys):
    raw = _config(env, "disk")
    capsys.readouterr()
    assert main(_train(env, raw, out=tiny_disk / "run")) == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("egrpo: error:")]
    assert len(lines) == 1 and "no space left" in lines[0] and str(tiny_disk) in lines[0], lines
    assert not list((tiny_disk / "run" / "checkpoints").glob("*.tmp"))  # the failed write is cleaned up


def _enospc(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where,named", [
    ("weights", "final/transformer/diffusion_pytorch_model.safetensors"),  # the export's weights
    ("log", "final/log.jsonl"),  # the copies beside them, after the weights
])
def test_a_full_disk_during_the_final_export_names_the_file(env, where, named, capsys, monkeypatch):
    """The disk fills after the last checkpoint, while the final weights or their log are written."""
    import safetensors.torch

    from egrpo import checkpoint

    if where == "weights":
        monkeypatch.setattr(safetensors.torch, "save_file", _enospc)
    else:
        copy = checkpoint.shutil.copyfile
        monkeypatch.setattr(checkpoint.shutil, "copyfile",
                            lambda src, dst, **kw: _enospc() if Path(dst).name == "log.jsonl" else copy(src, dst, **kw))
    out = env["dir"] / f"export_{where}"
    capsys.readouterr()
    assert main(_train(env, _config(env, "export_disk"), out=out)) == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("egrpo: error:")]
    assert len(lines) == 1 and "no space left writing" in lines[0] and str(out / named) in lines[0], lines
    assert not (out / "final" / "meta.json").exists()  # no complete-looking export
    assert (out / "checkpoints" / "last" / "meta.json").is_file()  # a retry exports from the last checkpoint


@pytest.fixture
def read_only_dir(tmp_path):
    """A read-only filesystem (root ignores a folder's permission bits, not a read-only mount)."""
    yield from _tmpfs(tmp_path / "ro", "size=64k,ro", "a read-only tmpfs")


@pytest.mark.parametrize("command", ["train", "evaluate", "world build"])
def test_a_read_only_out_is_one_line_before_any_model_loads(env, read_only_dir, command, capsys, monkeypatch):
    from egrpo.flux import FluxBackbone

    monkeypatch.setattr(FluxBackbone, "from_pretrained", lambda *a, **k: pytest.fail("a model was loaded"))
    out = read_only_dir / "out"
    args = {"train": _train(env, _config(env, "ro_out"), out=out),
            "evaluate": ["evaluate", "--model", str(env["flux"]), "--protocol", str(env["dir"] / "eval.json"),
                         "--out", str(out / "e.csv")],
            "world build": ["world", "build", "--out", str(out)]}[command]
    capsys.readouterr()
    assert main(args) == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("egrpo: error:")]
    assert len(lines) == 1 and str(out) in lines[0] and "Read-only file system" in lines[0], lines


def test_a_nan_metric_is_one_line_naming_the_metric_and_writes_no_result(env, capsys, monkeypatch):
    """A metric that scores NaN (a broken scorer, a NaN image) stops the evaluation: no CSV with a NaN
    row, no summary averaging over it."""
    import torch

    from egrpo import rewards

    def nan_reward(options, device):
        return lambda images, prompts: torch.where(torch.arange(len(images)) == 1, float("nan"), 0.5)

    monkeypatch.setitem(rewards.REWARDS, "nan_test", rewards.RewardSpec("nan_test", nan_reward))
    path = _protocol(env, "nan", metrics={"broken": {"reward": "nan_test"}})
    out = env["dir"] / "nan.csv"
    capsys.readouterr()
    assert main(["evaluate", "--model", str(env["flux"]), "--protocol", str(path), "--out", str(out)]) == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("egrpo: error:")]
    assert len(lines) == 1 and "metric 'broken'" in lines[0] and "[1]" in lines[0], lines
    assert not out.exists() and not out.with_suffix(".summary.csv").exists()
