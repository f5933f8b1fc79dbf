import torch

from baselines.branchgrpo import BranchGRPOMethod, BranchGRPOPlan
from baselines.dancegrpo import DanceGRPOMethod, DanceGRPOPlan
from baselines.tempflow import TempFlowMethod, TempFlowPlan
from egrpo.plans import EGRPOMethod, EGRPOPlan
from egrpo.flux import PromptEmbeds
from egrpo.sde import sde_step
from egrpo.rollout import (GroupSample, Prompt, forward_inputs, forward_loss, shares_input, train_units,
                            training_batches)


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


def test_packed_forwards_give_the_per_transition_loss_and_gradient():
    """A tree's edges at many depths share training forwards (per-row sigma): fewer, fuller forwards,
    none past micro_batch, and the same loss and gradient as one forward per transition."""
    torch.manual_seed(0)
    plan = BranchGRPOPlan(BranchGRPOMethod(group_size=8, num_steps=16, split_points=[0, 3, 6], edges_per_update=6))
    groups = []
    for slot in range(3):
        grp = group_on("cpu", plan, g=8)
        grp.prompt = Prompt(slot, 0, "p", PromptEmbeds(torch.randn(1, 2, 2), torch.randn(1, 2), torch.zeros(2, 3)))
        grp.latents = [torch.randn_like(x) for x in grp.latents]
        grp.log_probs = torch.randn_like(grp.log_probs)
        grp.advantages = torch.randn_like(grp.advantages)
        groups.append(grp)
    units = [u for grp in groups for u in train_units(grp, ("k", 0), 16, plan.cfg)]
    w, b = torch.nn.Parameter(torch.tensor(0.9)), torch.nn.Parameter(torch.tensor(0.3))

    def velocity(x, sigma, embeds):  # depends on each row's own sigma and prompt
        return w * x + b * sigma.view(-1, 1, 1) + embeds.pooled.sum(-1).view(-1, 1, 1)

    for u in units:  # old log-probs near the current policy's: ratios near 1, so the loss sees every row
        with torch.no_grad():
            x, sigma, embeds = forward_inputs([u])
            v = velocity(x, sigma, embeds)
            lp = sde_step(u.x[u.index], v[u.index], u.sigmas, u.i, u.j, rule=u.rule, eta=u.eta, prev_sample=u.prev).log_prob
        u.old_log_prob = lp + 1e-4 * torch.randn_like(lp)

    def loss_and_grad(step):
        w.grad = b.grad = None
        total = sum(forward_loss(f, velocity(*forward_inputs(f)), 1e-3)[0].sum() for f in step)
        total.backward()
        return float(total.detach()), float(w.grad), float(b.grad)

    steps = training_batches(units, 16)
    assert len(steps) == max(u.update for u in units) + 1
    for step in steps:
        assert all(sum(len(u.x) for u in f) <= 16 for f in step)
        flat = [[u] for f in step for u in f]
        assert len(step) < len(flat)  # the point: several transitions per forward
        packed, single = loss_and_grad(step), loss_and_grad(flat)
        assert torch.allclose(torch.tensor(packed), torch.tensor(single), rtol=1e-5, atol=1e-6)
