import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_run_config
from egrpo.config import resolve
from egrpo.sampler import initial_noise, make_transitions, sample
from egrpo.schedule import shifted_sigmas
from egrpo.seeding import generator
from egrpo.trainer import Trainer, TrainingError

METHODS = ["egrpo", "dancegrpo", "mixgrpo"]


def _trainer(tiny_flux_dir, out, method, reward_fns=None, **sections):
    cfg = resolve(tiny_run_config(tiny_flux_dir, method, **sections), method)
    return Trainer(cfg, out, rewards=reward_fns, progress=False)


def _ode_brightness(tr) -> float:
    """Mean brightness of deterministic samples of the four prompts (fixed seeds)."""
    bb = tr.backbone
    e = bb.encode_prompts(tr.prompts)
    x = initial_noise(bb, [generator("eval", k) for k in range(4)], 32, 32)
    with torch.no_grad():
        return float(sample(bb, e, shifted_sigmas(8, 3.0), make_transitions(8), x, None, height=32, width=32).images.mean())


@pytest.mark.parametrize("method", METHODS + ["mixgrpo_flash", "flowgrpo"])
def test_ratio_is_one_before_first_update(tiny_flux_dir, tmp_path, method):
    row = _trainer(tiny_flux_dir, tmp_path, method).step(0)
    assert row["ratio/max_dev"] <= 1e-6 and row["clip_fraction"] == 0.0
    assert row["trained_pairs"] > 0 and row["passes/sampling"] > 0 and row["passes/training"] > 0


@pytest.mark.parametrize("method", METHODS)
def test_short_run_raises_the_reward(tiny_flux_dir, tmp_path, method):
    tr = _trainer(tiny_flux_dir, tmp_path, method, train={"iterations": 8, "checkpoint_every": 100})
    before = _ode_brightness(tr)
    tr.train()
    after = _ode_brightness(tr)
    assert after > before + 0.02, (before, after)  # sample-to-sample std of brightness is ~0.003


def test_negated_reward_lowers_it(tiny_flux_dir, tmp_path):
    dark = {"darkness": lambda images, prompts: -images.mean(dim=(1, 2, 3))}
    tr = _trainer(tiny_flux_dir, tmp_path, "egrpo", reward_fns=dark, rewards={"names": ["darkness"]},
                  train={"iterations": 8, "checkpoint_every": 100})
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

    tr = _trainer(tiny_flux_dir, tmp_path, "dancegrpo", reward_fns={"flaky": flaky},
                  rewards={"names": ["flaky"]}, train={"checkpoint_every": 1})
    with pytest.raises(TrainingError, match="iteration 2"):
        tr.train()
    ck = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert ck["iteration"] == 2 and not (tmp_path / "checkpoints" / "last.pt.tmp").exists()


def test_lora_init_depends_on_the_run_seed_only(tiny_flux_dir, tmp_path):
    """peft draws LoRA's init from the global RNG; the trainer seeds it from (name, method, seed), so
    two runs of one config in one process start alike and other seeds start elsewhere."""
    def init(seed, out):
        tr = _trainer(tiny_flux_dir, tmp_path / out, "egrpo", model={"lora_rank": 4}, seed=seed)
        return [p.detach().clone() for p in tr.params]

    a, b, other = init(0, "a"), init(0, "b"), init(1, "c")
    assert len(a) > 0 and all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, other))
