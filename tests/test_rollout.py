import torch

from baselines.dancegrpo import DanceGRPOPlan
from egrpo.plans import EGRPOPlan
from egrpo.rollout import GroupSample, train_units


def group_on(device: str, plan, g: int = 4, tokens: int = 3, channels: int = 2) -> GroupSample:
    """A group whose model tensors live on `device` (meta stands in for a GPU: no second device on CI)."""
    ip = plan.for_iteration(0)
    r = ip.rollouts[0]
    k = len(r.head)
    latents = [torch.zeros(g, tokens, channels, device=device) for _ in range(k + 1)]
    return GroupSample(r, ip.sigmas.to(device), 0, None, latents, torch.zeros(g, k, device=device), [])


def test_train_units_put_cpu_advantages_on_the_models_device(monkeypatch):
    # Rewards score on the CPU while the latents sit on the GPU: the H100 run of benchmarks/gpu_flux.py
    # failed in the PPO loss until the advantages followed the latents.
    monkeypatch.setattr(torch, "equal", lambda a, b: a.shape == b.shape)  # no meta kernel; values are moot here
    for plan in (EGRPOPlan(num_steps=16), DanceGRPOPlan()):
        grp = group_on("meta", plan)
        units = train_units(grp, torch.arange(4.0), ("k", 0), micro_batch=2)
        assert units and all(u.advantages.device.type == "meta" for u in units)
        assert all(u.advantages.device == u.prev.device == u.old_log_prob.device for u in units)
