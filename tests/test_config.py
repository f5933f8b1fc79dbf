"""Run-config fields with a rule of their own: reward weights normalised to sum 1 (MixGRPO's release),
the reward models' precision (one source), and what config/flux.yaml resolves them to per method."""

from pathlib import Path

import pytest
import yaml

from egrpo.config import resolve
from egrpo.errors import ConfigError
from egrpo.experiment import Experiment

ROOT = Path(__file__).resolve().parents[1]


def _rewards(**rewards):
    raw = {"model": {"path": "/nonexistent"}, "train": {"prompts": ["a"]},
           "rewards": {"names": ["hpsv21", "clip_score"], **rewards}}
    return resolve(raw, "mixgrpo").rewards


def test_weights_normalised_to_sum_one():
    assert _rewards(weights=[1.0, 1.0]).weight_map() == {"hpsv21": 1.0, "clip_score": 1.0}
    assert _rewards(weights=[1.0, 1.0], normalise_weights=True).weight_map() == {"hpsv21": 0.5, "clip_score": 0.5}
    assert _rewards(weights=[0.7, 0.3], normalise_weights=True).weight_map() == pytest.approx(
        {"hpsv21": 0.7, "clip_score": 0.3})
    with pytest.raises(ConfigError, match="normalise_weights"):
        _rewards(weights=[1.0, -1.0], normalise_weights=True)


def test_reward_precision_has_one_source():
    assert _rewards().reward_options("hpsv21") == {"precision": "amp"}  # the releases' training rewards
    both = _rewards(precision={"clip_score": "fp32"}, options={"hpsv21": {"checkpoint": "x"}})
    assert both.reward_options("hpsv21") == {"checkpoint": "x", "precision": "amp"}
    assert both.reward_options("clip_score") == {"precision": "fp32"}
    with pytest.raises(ConfigError, match="rewards.options: .*precision"):
        _rewards(options={"hpsv21": {"precision": "bf16"}})
    with pytest.raises(ConfigError, match="rewards.precision"):
        _rewards(precision="half")
    with pytest.raises(ConfigError, match="unknown reward 'hps'"):
        _rewards(precision={"hps": "fp32"})


def test_flux_config_trains_each_method_as_its_release():
    """MixGRPO normalises HPS+CLIP's 1:1 to 0.5:0.5 and scores CLIP in fp32 (M); E-GRPO, GranularGRPO,
    DanceGRPO, BranchGRPO and TempFlow-GRPO sum 1:1 (G; the last three rows are the harness's
    construction: their releases have no HPS+CLIP code); HPS under fp16 autocast for all."""
    exp = Experiment.from_files([ROOT / "config" / "flux.yaml"])
    for method, weights, clip in (("egrpo", 1.0, "amp"), ("g2rpo", 1.0, "amp"), ("dancegrpo", 1.0, "amp"),
                                  ("branchgrpo", 1.0, "amp"), ("tempflow", 1.0, "amp"), ("mixgrpo", 0.5, "fp32")):
        both = exp.run_config("hps_clip", method).rewards
        assert both.weight_map() == {"hpsv21": weights, "clip_score": weights}, method
        assert [both.reward_options(n)["precision"] for n in both.names] == ["amp", clip], method
        assert exp.run_config("hps", method).rewards.weight_map() == {"hpsv21": 1.0}, method
    assert exp.settings["hps_clip"].constructed == ["dancegrpo", "branchgrpo", "tempflow"]
    assert exp.settings["hps"].constructed == []
    protocol = exp.eval_protocol()
    assert (protocol.precision, protocol.score_text, protocol.sampler.dtype) == ("fp32", "prompt", "auto")


@pytest.mark.parametrize("edit,named", [
    (lambda c: c["inputs"]["rewards"]["hpsv21"].update(precision="bf16"), "inputs.rewards: hpsv21.precision"),
    (lambda c: c["settings"]["hps_clip"].update(constructed=["flowgrpo"]), "settings.hps_clip.constructed[0]"),
])
def test_flux_config_errors_name_the_key(edit, named):
    raw = yaml.safe_load((ROOT / "config" / "flux.yaml").read_text())
    edit(raw)
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        Experiment.load(raw)


def test_relative_paths_are_relative_to_the_working_directory_only(tmp_path, monkeypatch):
    """The path rule (config/README.md): a relative path in a config file or a --set override is kept as
    written, relative to the working directory; a same-named file beside the config file is not
    preferred (it used to be, when it existed)."""
    from egrpo.config import load_config

    folder = tmp_path / "configs"
    folder.mkdir()
    for where in (tmp_path, folder):
        (where / "prompts.txt").write_text("a red circle\n")
        (where / "model").mkdir()
    raw = {"model": {"path": "model"}, "train": {"prompts": "prompts.txt"}, "rewards": {"names": ["brightness"]}}
    (folder / "run.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(folder / "run.yaml", "dancegrpo")
    assert (cfg.model.path, cfg.train.prompts) == ("model", "prompts.txt")
    cfg = load_config(folder / "run.yaml", "dancegrpo", overrides=["train.prompts=prompts.txt", "model.path=model"])
    assert (cfg.model.path, cfg.train.prompts) == ("model", "prompts.txt")


@pytest.mark.parametrize("override,named", [
    ("train.iterations=yes", "train.iterations"),  # YAML 1.1's yes is a string here, and a string is not a count
    ("model.lora_rank=off", "model.lora_rank"),
    ("train.iterations=true", "train.iterations: a number, not a boolean"),
    ("optim.lr=.nan", "optim.lr"),
    ("optim.betas=[0.9, 1.0]", "optim.betas"),
    ("rewards.options.brightness.scale=2", "rewards.options.brightness.scale: not an option of reward 'brightness'"),
])
def test_set_values_are_read_strictly(override, named):
    raw = {"model": {"path": "m"}, "train": {"prompts": ["a"]}, "rewards": {"names": ["brightness"]}}
    with pytest.raises(ConfigError, match=None) as e:
        resolve(raw, "dancegrpo", overrides=[override])
    assert named in str(e.value) and len(str(e.value).splitlines()) == 1, str(e.value)


@pytest.mark.parametrize("edit,named", [
    (lambda c: c["inputs"]["rewards"].update(world_fidelity={"critic": "results/world/critic.pt", "critc": "x"}),
     "inputs.rewards.world_fidelity.critc"),
    (lambda c: c["inputs"]["rewards"].update(world_fidelity={"critic": "results/world/critic.pt", "precison": "bf16"}),
     "inputs.rewards.world_fidelity.precison"),
    (lambda c: c.update(metric_scales={"hsp": "0-1"}), "metric_scales.hsp"),
    (lambda c: c.update(seeds=[0, 0]), "seeds"),
])
def test_experiment_options_are_checked(edit, named):
    raw = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())
    edit(raw)
    with pytest.raises(ConfigError) as e:
        Experiment.load(raw)
    assert named in str(e.value), str(e.value)
