import torch

from baselines.branchgrpo import BranchGRPOMethod, BranchGRPOPlan
from baselines.dancegrpo import DanceGRPOMethod, DanceGRPOPlan
from baselines.tempflow import TempFlowMethod, TempFlowPlan
from egrpo.plans import EGRPOMethod, EGRPOPlan
from egrpo.rollout import GroupSample, Prompt, shares_input, train_units


def group_on(device: str, plan, g: int = 4, tokens: int = 3, channels: int = 2) -> GroupSample:
    """A group whose model tensors live on `device` (meta stands in for a GPU: no second device on CI)."""
    ip = plan.for_iteration(0)
    r = ip.rollouts[0]
    k = len(r.head)
    latents = [torch.zeros(g, tokens, channels, device=device) for _ in range(k + 1)]
    grp = GroupSample(r, 0, Prompt(0, 0, "p", None), ip.sigmas, latents,  # sigmas stay on the CPU, as sampled
                      torch.zeros(g, k, device=device), {})
    grp.advantages = torch.arange(float(g)) if r.edges is None else torch.arange(float(g * k)).view(g, k)
    return grp


def test_train_units_put_cpu_advantages_on_the_models_device():
    # Rewards score on the CPU while the latents sit on the GPU: the H100 run of benchmarks/gpu_flux.py
    # failed in the PPO loss until the advantages followed the latents.
    for plan in (EGRPOPlan(EGRPOMethod(group_size=4)), DanceGRPOPlan(DanceGRPOMethod(group_size=4)),
                 TempFlowPlan(TempFlowMethod(group_size=4)),
                 BranchGRPOPlan(BranchGRPOMethod(group_size=4, num_steps=8, split_points=[0, 3]))):
        units = train_units(group_on("meta", plan), ("k", 0), 2, plan.cfg)
        assert units and all(u.advantages.device.type == "meta" for u in units)
        assert all(u.advantages.device == u.prev.device == u.old_log_prob.device for u in units)


def test_units_follow_the_update_schedule():
    """DanceGRPO's rows 0-3, 4-7, 8-11 train in three AdamW steps; E-GRPO's branches share one forward."""
    dance = DanceGRPOPlan(DanceGRPOMethod())
    units = train_units(group_on("cpu", dance, g=12), ("k", 0), 12, dance.cfg)
    assert sorted({u.update for u in units}) == [0, 1, 2]
    assert all(len(u.prev) <= 4 for u in units)
    plan = EGRPOPlan(EGRPOMethod(group_size=12))
    (unit,) = train_units(group_on("cpu", plan, g=12), ("k", 0), 4, plan.cfg)
    assert unit.x.shape[0] == 1 and unit.index.tolist() == [0] * 12  # one forward for the whole group
    assert shares_input(plan.for_iteration(0).rollouts[0], 0)
    assert shares_input(dance.for_iteration(0).rollouts[0], 0) and not shares_input(dance.for_iteration(0).rollouts[0], 1)
