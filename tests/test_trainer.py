import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_run_config
from egrpo.config import resolve
from egrpo.rewards import register
from egrpo.sampler import initial_noise, sample
from egrpo.transitions import make_transitions
from egrpo.schedule import shifted_sigmas
from egrpo.seeding import generator
from egrpo.trainer import Trainer, TrainingError

METHODS = ["egrpo", "dancegrpo", "mixgrpo", "g2rpo", "tempflow", "branchgrpo"]


def _trainer(tiny_flux_dir, out, method, reward_fns=None, method_update=None, **sections):
    raw = tiny_run_config(tiny_flux_dir, method, **sections)
    raw["method"].update(method_update or {})
    cfg = resolve(raw, method)
    return Trainer(cfg, out, rewards=reward_fns, progress=False)


def _ode_brightness(tr) -> float:
    """Mean brightness of deterministic samples of the four prompts (fixed seeds)."""
    bb = tr.backbone
    e = bb.encode_prompts(tr.prompts)
    x = initial_noise(bb, [generator("eval", k) for k in range(4)], 32, 32)
    with torch.no_grad():
        return float(sample(bb, e, shifted_sigmas(8, 3.0), make_transitions(8), x, None, height=32, width=32).images.mean())


# AdamW steps of one tiny iteration under each release's schedule: E-GRPO and GranularGRPO one per
# active step (first4), DanceGRPO one per 4 of a group's 4 samples, MixGRPO(-Flash) and TempFlow-GRPO
# one per 3 of 4, Flow-GRPO one, BranchGRPO one per 6 of a 4-leaf tree's 26 edges over 8 steps
RELEASE_UPDATES = {"egrpo": 4, "dancegrpo": 1, "mixgrpo": 2, "mixgrpo_flash": 2, "flowgrpo": 1, "g2rpo": 4,
                   "tempflow": 2, "branchgrpo": 5}


@pytest.mark.parametrize("method", list(RELEASE_UPDATES))
def test_ratio_is_one_before_first_update(tiny_flux_dir, tmp_path, method):
    row = _trainer(tiny_flux_dir, tmp_path, method).step(0)
    assert row["updates"] == RELEASE_UPDATES[method]
    assert row["ratio/first_update_max_dev"] <= 1e-6
    assert row["trained_pairs"] > 0 and row["passes/sampling"] > 0 and row["passes/training"] > 0
    if row["updates"] > 1:  # later steps see off-policy samples: the PPO clip bounds them, as in the releases
        assert row["ratio/max_dev"] > 1e-4 and row["clip_fraction"] > 0
    single = _trainer(tiny_flux_dir, tmp_path / "alg1", method, method_update={"update": "iteration"}).step(0)
    assert single["updates"] == 1 and single["ratio/max_dev"] <= 1e-6 and single["clip_fraction"] == 0.0


@pytest.mark.parametrize("method", METHODS)
def test_short_run_raises_the_reward(tiny_flux_dir, tmp_path, method):
    tr = _trainer(tiny_flux_dir, tmp_path, method, train={"iterations": 8, "checkpoint_every": 100},
                  method_update={"update": "iteration"})
    before = _ode_brightness(tr)
    tr.train()
    after = _ode_brightness(tr)
    assert after > before + 0.02, (before, after)  # sample-to-sample std of brightness is ~0.003


@pytest.mark.parametrize("method", ["egrpo", "dancegrpo"])
def test_release_schedules_learn(tiny_flux_dir, tmp_path, method):
    """Several AdamW steps an iteration (E-GRPO: 4 here, DanceGRPO: 1 per 4 samples). At this tiny
    model's learning rate the first step moves the later steps' ratios far past the releases' clip of
    1e-4, which then stops most of their gradient; with the clip opened every step learns."""
    tr = _trainer(tiny_flux_dir, tmp_path, method, train={"iterations": 8, "checkpoint_every": 100},
                  optim={"lr": 1e-2, "clip_range": 1.0})
    before = _ode_brightness(tr)
    tr.train()
    after = _ode_brightness(tr)
    assert after > before + 0.02, (before, after)  # sample-to-sample std of brightness is ~0.003


def test_negated_reward_lowers_it(tiny_flux_dir, tmp_path):
    register("darkness", lambda options, device: lambda images, prompts: -images.mean(dim=(1, 2, 3)))
    tr = _trainer(tiny_flux_dir, tmp_path, "egrpo", rewards={"names": ["darkness"]},
                  train={"iterations": 8, "checkpoint_every": 100}, method_update={"update": "iteration"})
    before = _ode_brightness(tr)
    tr.train()
    assert _ode_brightness(tr) < before - 0.02


def _log(path):
    rows = [json.loads(line) for line in (path / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


@pytest.mark.parametrize("method", ["egrpo", "dancegrpo"])
def test_resume_after_kill_equals_uninterrupted(tiny_flux_dir, tmp_path, method, monkeypatch):
    _trainer(tiny_flux_dir, tmp_path / "full", method).train()

    killed = _trainer(tiny_flux_dir, tmp_path / "killed", method)
    real_step = Trainer.step

    def dying_step(self, it):
        if it == 3:
            raise KeyboardInterrupt  # killed mid-run, after the checkpoint at iteration 2
        return real_step(self, it)

    monkeypatch.setattr(Trainer, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    monkeypatch.setattr(Trainer, "step", real_step)
    assert len(_log(tmp_path / "killed")) == 3  # iteration 2 was logged but not checkpointed

    resumed = _trainer(tiny_flux_dir, tmp_path / "killed", method)
    resumed.train()
    assert resumed.start == 2
    a = load_file(str(tmp_path / "full" / "final" / "trainable.safetensors"))
    b = load_file(str(tmp_path / "killed" / "final" / "trainable.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _log(tmp_path / "full") == _log(tmp_path / "killed")


def test_nan_reward_stops_naming_iteration_and_keeps_checkpoint(tiny_flux_dir, tmp_path):
    calls = {"n": 0}

    def flaky(images, prompts):
        calls["n"] += 1
        out = images.mean(dim=(1, 2, 3))
        return out if calls["n"] < 3 else out * float("nan")

    register("flaky", lambda options, device: flaky)
    tr = _trainer(tiny_flux_dir, tmp_path, "dancegrpo", rewards={"names": ["flaky"]}, train={"checkpoint_every": 1})
    with pytest.raises(TrainingError, match="iteration 2"):
        tr.train()
    meta = json.loads((tmp_path / "checkpoints" / "last" / "meta.json").read_text())
    assert meta["iteration"] == 2 and not (tmp_path / "checkpoints" / "last.tmp").exists()


def test_a_diverged_run_is_recorded_and_its_retry_fails_at_once(tiny_flux_dir, tmp_path, monkeypatch):
    """A non-finite reward is deterministic from the last checkpoint: the run directory records it, and
    the same run started again fails with the same message before any model loads, until the record
    is deleted; a run of another config removes the record."""
    from egrpo import failures
    from egrpo.errors import ConfigError
    from egrpo.flux import FluxBackbone

    register("nan_at_third_call", lambda options, device: (
        lambda images, prompts, calls=[0]: (calls.__setitem__(0, calls[0] + 1), images.mean(dim=(1, 2, 3))
                                            * (float("nan") if calls[0] == 3 else 1.0))[1]))
    sections = dict(rewards={"names": ["nan_at_third_call"]}, train={"checkpoint_every": 1})
    with pytest.raises(TrainingError, match="iteration 2") as first:
        _trainer(tiny_flux_dir, tmp_path, "dancegrpo", **sections).train()
    record = json.loads((tmp_path / failures.FILE).read_text())
    assert record["kind"] == "TrainingError" and record["iteration"] == 2 and record["error"] == str(first.value)

    loads = []
    real = FluxBackbone.from_pretrained.__func__
    monkeypatch.setattr(FluxBackbone, "from_pretrained", classmethod(lambda cls, *a, **k: loads.append(1) or real(cls, *a, **k)))
    with pytest.raises(TrainingError, match=r"iteration 2: .*recorded in .*failed.json.*delete") as again:
        _trainer(tiny_flux_dir, tmp_path, "dancegrpo", **sections)
    assert str(first.value) in str(again.value) and loads == []  # failed before loading anything
    _trainer(tiny_flux_dir, tmp_path / "other", "dancegrpo", **sections)  # another run directory: unaffected
    (tmp_path / failures.FILE).unlink()  # cleared: the run starts (and resumes from its checkpoint)
    assert _trainer(tiny_flux_dir, tmp_path, "dancegrpo", **sections).resume() == 2
    failures.record(tmp_path, resolve(tiny_run_config(tiny_flux_dir, "dancegrpo", **sections), "dancegrpo"), 1,
                    TrainingError("iteration 2: non-finite"), 2)
    lower = {**sections, "optim": {"lr": 1e-3}}  # another config: the record says nothing about it
    with pytest.raises(ConfigError, match="another config"):  # but its checkpoint refuses it, as before
        _trainer(tiny_flux_dir, tmp_path, "dancegrpo", **lower).train()
    record = json.loads((tmp_path / failures.FILE).read_text())  # a config error is recorded in turn
    assert record["kind"] == "ConfigError" and record["config"]["optim"]["lr"] == 1e-3
    with pytest.raises(ConfigError, match="another config.*recorded in"):
        _trainer(tiny_flux_dir, tmp_path, "dancegrpo", **lower)


def test_weights_that_blow_up_keep_the_last_finite_checkpoint(tiny_flux_dir, tmp_path, monkeypatch):
    tr = _trainer(tiny_flux_dir, tmp_path, "dancegrpo", train={"checkpoint_every": 1})
    real_step = Trainer.step

    def exploding(self, it):
        row = real_step(self, it)
        if it == 2:  # an update that overflowed without a non-finite loss or gradient norm
            with torch.no_grad():
                self.params[0].fill_(float("inf"))
        return row

    monkeypatch.setattr(Trainer, "step", exploding)
    with pytest.raises(TrainingError, match="no longer finite"):
        tr.train()
    assert json.loads((tmp_path / "checkpoints" / "last" / "meta.json").read_text())["iteration"] == 2


def test_resume_refuses_a_checkpoint_of_another_config(tiny_flux_dir, tmp_path):
    from egrpo.errors import ConfigError

    _trainer(tiny_flux_dir, tmp_path, "egrpo").train()
    with pytest.raises(ConfigError, match="optim.lr"):
        _trainer(tiny_flux_dir, tmp_path, "egrpo", optim={"lr": 1e-3}).train()
    with pytest.raises(ConfigError, match="method.name"):
        _trainer(tiny_flux_dir, tmp_path, "dancegrpo").train()
    with pytest.raises(ConfigError, match="train.iterations"):
        _trainer(tiny_flux_dir, tmp_path, "egrpo", train={"iterations": 2}).train()
    with pytest.raises(ConfigError, match="model.lora_rank"):
        _trainer(tiny_flux_dir, tmp_path, "egrpo", model={"lora_rank": 4}).train()
    longer = _trainer(tiny_flux_dir, tmp_path, "egrpo", train={"iterations": 5})  # iterations may grow
    longer.train()
    assert longer.start == 4 and len(_log(tmp_path)) == 5
    fresh = _trainer(tiny_flux_dir, tmp_path, "egrpo", optim={"lr": 1e-3})
    fresh.on_config_change = "restart"  # what the DAG passes: the stale run is never reused
    fresh.train()
    assert fresh.start == 0 and [r["iteration"] for r in _log(tmp_path)] == [0, 1, 2, 3]


def test_a_run_killed_before_its_first_checkpoint_starts_a_fresh_log(tiny_flux_dir, tmp_path, monkeypatch):
    real_step = Trainer.step

    def dying_step(self, it):
        if it == 1:
            raise KeyboardInterrupt
        return real_step(self, it)

    monkeypatch.setattr(Trainer, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        _trainer(tiny_flux_dir, tmp_path, "dancegrpo").train()  # checkpoint_every 2: killed before it
    monkeypatch.setattr(Trainer, "step", real_step)
    _trainer(tiny_flux_dir, tmp_path, "dancegrpo").train()
    assert [r["iteration"] for r in _log(tmp_path)] == [0, 1, 2, 3]  # not 0, 0, 1, 2, 3


def test_a_partial_last_log_line_is_recovered_on_resume(tiny_flux_dir, tmp_path, monkeypatch):
    real_step = Trainer.step

    def dying_step(self, it):
        if it == 3:
            with open(self.log_path, "a") as f:
                f.write('{"iteration": 3, "los')  # killed while writing the row
            raise KeyboardInterrupt
        return real_step(self, it)

    monkeypatch.setattr(Trainer, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        _trainer(tiny_flux_dir, tmp_path, "dancegrpo").train()
    monkeypatch.setattr(Trainer, "step", real_step)
    resumed = _trainer(tiny_flux_dir, tmp_path, "dancegrpo")
    resumed.train()
    assert resumed.start == 2 and [r["iteration"] for r in _log(tmp_path)] == [0, 1, 2, 3]


def test_a_corrupted_checkpoint_is_named(tiny_flux_dir, tmp_path):
    from egrpo.errors import InputError

    tr = _trainer(tiny_flux_dir, tmp_path, "dancegrpo", train={"iterations": 2})
    tr.train()
    shard = next((tmp_path / "checkpoints" / "last").glob("__0_*.distcp"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the Adam state
    shard.write_bytes(bytes(data))
    with pytest.raises(InputError, match=shard.name):
        _trainer(tiny_flux_dir, tmp_path, "dancegrpo", train={"iterations": 3}).train()
    (tmp_path / "checkpoints" / "last" / "meta.json").write_text("{")
    with pytest.raises(InputError, match="meta.json"):
        _trainer(tiny_flux_dir, tmp_path, "dancegrpo", train={"iterations": 3}).train()


def test_a_prompt_repeated_in_one_iteration_gets_fresh_noise(tiny_flux_dir, tmp_path):
    """One training prompt, two slots an iteration: two different groups, not one counted twice."""
    tr = _trainer(tiny_flux_dir, tmp_path, "dancegrpo", train={"prompts": ["a red circle"]})
    slots = tr.iteration_prompts(0)
    assert [pid for _, pid in slots] == [0, 0] and len({slot for slot, _ in slots}) == 2
    from egrpo.rollout import Prompt, sample_iteration

    prompts = [Prompt(slot, pid, "a red circle", tr.embeds(pid)) for slot, pid in slots]
    sample = sample_iteration(tr.backbone, tr.plan.for_iteration(0), prompts, tr.seed_key(0), 4, 32, 32)
    a, b = (g.images["final"] for g in sample.groups)
    assert not torch.equal(a, b)


def test_lora_init_depends_on_the_run_seed_only(tiny_flux_dir, tmp_path):
    """peft draws LoRA's init from the global RNG; the trainer seeds it from (name, method, seed), so
    two runs of one config in one process start alike and other seeds start elsewhere."""
    def init(seed, out):
        tr = _trainer(tiny_flux_dir, tmp_path / out, "egrpo", model={"lora_rank": 4}, seed=seed)
        return [p.detach().clone() for p in tr.params]

    a, b, other = init(0, "a"), init(0, "b"), init(1, "c")
    assert len(a) > 0 and all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, other))


@pytest.mark.parametrize("export", ["fp32", "bf16"])
def test_the_export_writes_its_dtype_and_evaluation_loads_it(tiny_flux_dir, tmp_path, export):
    """train.export_dtype: fp32 writes the master weights exactly (as the releases save theirs), bf16 their
    rounding; evaluation loads what was written, in the dtype it samples in."""
    from egrpo.checkpoint import load_trained

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[export]
    tr = _trainer(tiny_flux_dir, tmp_path, "dancegrpo", train={"iterations": 1, "export_dtype": export},
                  optim={"lr": 1e-5})
    final = tr.train()
    written = load_file(str(final / "trainable.safetensors"))
    assert {v.dtype for v in written.values()} == {dtype}
    assert json.loads((final / "meta.json").read_text())["dtype"] == str(dtype).removeprefix("torch.")
    master = tr.backbone.transformer.state_dict()
    assert all(torch.equal(v, master[k].to(dtype)) for k, v in written.items())
    rounded = sum(int((master[k].to(dtype).float() != master[k]).sum()) for k in written)
    assert (rounded == 0) == (export == "fp32")  # bf16 rounds the master weights away from their values
    for eval_dtype in (torch.float32, torch.float16):  # the CPU's, and the release's on a GPU
        loaded = load_trained(final, dtype=eval_dtype).transformer.state_dict()
        assert all(torch.equal(loaded[k], v.to(eval_dtype)) for k, v in written.items())
