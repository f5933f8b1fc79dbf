import torch

from egrpo.sampler import SDE, Transition, initial_noise, make_transitions, sample
from egrpo.schedule import shifted_sigmas
from egrpo.seeding import derive_seed, generator

SIGMAS = shifted_sigmas(8, 3.0)


def test_make_transitions_patterns():
    assert make_transitions(4) == tuple(Transition(i, i + 1) for i in range(4))
    tr = make_transitions(8, {1: SDE(length=3)}, start=1, ode_stride=2)
    assert [(t.i, t.j, t.stochastic) for t in tr] == [(1, 4, True), (4, 6, False), (6, 8, False)]
    tr = make_transitions(5, {3: SDE()}, ode_stride=2)  # stride never skips an SDE step
    assert [(t.i, t.j) for t in tr] == [(0, 2), (2, 3), (3, 4), (4, 5)]


def test_seeds_are_stable_and_distinct():
    assert derive_seed("egrpo", 0, 3) == derive_seed("egrpo", 0, 3)
    assert derive_seed("egrpo", 0, 3) != derive_seed("egrpo", 0, 4)


def _run(backbone, rows=2, batch_split=False):
    e = backbone.encode_prompts(["a red circle", "a blue square"])
    gens = [generator("test", k) for k in range(rows)]
    x = initial_noise(backbone, gens, 64, 64)
    tr = make_transitions(8, {0: SDE("flow_grpo", 0.7), 2: SDE("dance_grpo", 0.3, length=2)})
    if not batch_split:
        return sample(backbone, e, SIGMAS, tr, x, gens, height=64, width=64)
    parts = [sample(backbone, e.select([k]), SIGMAS, tr, x[k:k + 1], gens[k:k + 1], height=64, width=64)
             for k in range(rows)]
    return parts


def test_sampler_records_and_is_deterministic(backbone):
    a, b = _run(backbone), _run(backbone)
    assert a.images.shape == (2, 3, 64, 64)
    assert torch.equal(a.images, b.images)
    assert a.stochastic == [True, False, True, False, False, False, False]
    assert len(a.latents) == len(a.transitions) + 1 and a.log_probs.shape == (2, 7)
    assert torch.all(a.log_probs[:, [1, 3, 4, 5, 6]] == 0) and torch.all(a.log_probs[:, [0, 2]] != 0)
    assert not torch.equal(a.images[0], a.images[1])


def test_row_result_does_not_depend_on_batching(backbone):
    whole = _run(backbone)
    parts = _run(backbone, batch_split=True)
    for k, p in enumerate(parts):
        torch.testing.assert_close(p.final(), whole.final()[k:k + 1], atol=1e-5, rtol=1e-5)


def test_recorded_transitions_rescore_to_ratio_one(backbone):
    from egrpo.sde import sde_step

    traj = _run(backbone)
    e = backbone.encode_prompts(["a red circle", "a blue square"])
    for k, tr in enumerate(traj.transitions):
        if not tr.stochastic:
            continue
        v = backbone.velocity(traj.latents[k], SIGMAS[tr.i], e, 64, 64)
        again = sde_step(traj.latents[k], v, SIGMAS, tr.i, tr.j, rule=tr.rule, eta=tr.eta,
                         prev_sample=traj.latents[k + 1])
        ratio = torch.exp(again.log_prob - traj.log_probs[:, k])
        torch.testing.assert_close(ratio, torch.ones_like(ratio), atol=1e-6, rtol=0)


def test_lanes_of_one_origin_share_forwards_while_their_paths_agree(backbone):
    from egrpo.plans import release_tail
    from egrpo.sampler import Lane, run_lanes

    e = backbone.encode_prompts(["a red circle"])
    x = initial_noise(backbone, [generator("lanes", k) for k in range(3)], 64, 64)
    tails = [release_tail(8, 2, g) for g in (1, 2)]  # 2,3,4,...,7 -> 8 and 2,3,5 -> 8
    assert [(t.i, t.j) for t in tails[1]] == [(2, 3), (3, 5), (5, 8)]
    together = [Lane(e, SIGMAS, t, x.clone(), origin="branch") for t in tails]  # copies share by key, not identity
    before = backbone.passes
    run_lanes(backbone, together, height=64, width=64)
    # both take 2 -> 3 from the same latent, so their forwards at 2 and at 3 are computed once
    assert backbone.passes - before == 3 * (len(tails[0]) + len(tails[1]) - 2)
    apart = [Lane(e, SIGMAS, t, x) for t in tails]  # no origin: no sharing, even for the same tensor
    before = backbone.passes
    run_lanes(backbone, apart, height=64, width=64)
    assert backbone.passes - before == 3 * (len(tails[0]) + len(tails[1]))
    for t, lane in zip(tails, together):
        solo = Lane(e, SIGMAS, t, x)
        run_lanes(backbone, [solo], height=64, width=64)
        torch.testing.assert_close(lane.x, solo.x, atol=1e-5, rtol=1e-5)


def test_the_first_dpm_step_after_an_sde_window_is_second_order():
    """MixGRPO-Flash: the window's data predictions feed DPM-Solver++'s memory, so the first DPM step
    already uses the previous one (the release's sampler; its last step is first order)."""
    from egrpo.dpm_solver import dpm_solver_2m_step
    from egrpo.flux import PromptEmbeds
    from egrpo.sampler import DPM2, Lane

    sig = torch.tensor([0.9, 0.8, 0.5, 0.2, 0.0])
    e = PromptEmbeds(torch.zeros(1, 2, 4), torch.zeros(1, 4), torch.zeros(2, 3))
    x = torch.randn(1, 3, 2)
    tr = [Transition(0, 1, "flow_grpo", 0.7), Transition(1, 2, DPM2), Transition(2, 3, DPM2), Transition(3, 4, DPM2)]
    lane = Lane(e, sig, tr, x, [generator("dpm", 0)])
    v0, v1 = torch.randn(1, 3, 2), torch.randn(1, 3, 2)
    lane.advance(v0)
    x1 = lane.x
    lane.advance(v1)
    x0_prev, x0 = x - 0.9 * v0, x1 - 0.8 * v1
    torch.testing.assert_close(lane.x, dpm_solver_2m_step(x1, x0, x0_prev, 0.9, 0.8, 0.5))
    first_order = dpm_solver_2m_step(x1, x0, None, None, 0.8, 0.5)
    assert not torch.allclose(lane.x, first_order)
