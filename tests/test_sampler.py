import math

import torch

from egrpo.sampler import initial_noise, sample
from egrpo.transitions import SDE, Transition, make_transitions
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
    from egrpo.sampler import Lane
    from egrpo.transitions import DPM2

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


# ---- trees: rows sharing a prefix share its forwards; a node's noise is keyed by the node ----------
from egrpo.cost import StandInBackbone, stand_in_embeds  # noqa: E402
from egrpo.sampler import Lane, run_lanes  # noqa: E402
from egrpo.transitions import Tree  # noqa: E402
from egrpo.sde import gaussian_log_prob, sde_step  # noqa: E402

RELEASE_SPLITS = ((0, 2), (3, 2), (6, 2), (9, 2))  # BranchGRPO's script: 16 leaves over 20 steps


def velocity(x, sigma):  # an analytic stand-in for the network: deterministic, row by row
    return 0.4 * x - (1 - sigma) * torch.tanh(x)


def tree_lane(backbone, rows=16, steps=20, splits=RELEASE_SPLITS, scale=4.0, shape=(8, 4), prefix=("t",)):
    sigmas = shifted_sigmas(steps, 3.0)
    at = {k for k, _ in splits}
    tr = tuple(Transition(i, i + 1, "dance_grpo", 0.3, scale if i in at else 1.0) for i in range(steps))
    root = torch.randn(1, *shape, generator=generator("root")).expand(rows, -1, -1)
    lane = Lane(stand_in_embeds(), sigmas, tr, root, tree=Tree(rows, splits),
                node_generator=lambda k, n: generator(*prefix, "node", k, n))
    return lane, sigmas, tr


def test_tree_nodes_and_rows():
    t = Tree(16, RELEASE_SPLITS)
    assert [t.nodes(k) for k in (-1, 0, 2, 3, 5, 6, 9, 19)] == [1, 2, 2, 4, 4, 8, 16, 16]
    assert t.node_of(3).tolist() == [r // 4 for r in range(16)] and t.first_rows(3).tolist() == [0, 4, 8, 12]
    for bad in (((0, 2), (3, 2)), ((0, 2), (0, 8)), ((0, 1), (3, 16))):
        try:
            Tree(16, bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_a_tree_forwards_each_node_once():
    """BranchGRPO's release forwards every node once: 1 + 3x2 + 3x4 + 3x8 + 10x16 = 203 rows for its
    tree of 16 leaves over 20 steps, against 320 for 16 independent rows."""
    bb = StandInBackbone(*(8, 4), velocity=velocity)
    lane, _, _ = tree_lane(bb)
    run_lanes(bb, [lane], height=16, width=16)
    assert bb.passes == 1 + 3 * 2 + 3 * 4 + 3 * 8 + 10 * 16 == 203
    assert lane.done and lane.x.shape == (16, 8, 4)


def test_tree_rows_re_derived_node_by_node():
    """Each leaf re-derived on its own: at transition k row r draws the noise of its node
    r // (16 / nodes(k)) from generator(..., "node", k, node), widened 4x at a split step, and its
    log-prob is that of the policy's own (unscaled) std, as the release (flux_step_with_split)."""
    bb = StandInBackbone(8, 4, velocity=velocity)
    lane, sigmas, tr = tree_lane(bb)
    run_lanes(bb, [lane], height=16, width=16)
    traj = lane.trajectory()
    tree = Tree(16, RELEASE_SPLITS)
    for r in (0, 5, 15):
        x = lane.latents[0][r:r + 1]
        for k, t in enumerate(tr):
            node = r // (16 // tree.nodes(k))
            eps = torch.randn(1, 8, 4, generator=generator("t", "node", k, node)) * t.noise_scale
            step = sde_step(x, velocity(x, sigmas[k].view(1, 1, 1)), sigmas, k, k + 1, rule="dance_grpo", eta=0.3,
                            noise=eps)
            torch.testing.assert_close(step.prev_sample, lane.latents[k + 1][r:r + 1], rtol=0, atol=1e-6)
            unscaled = gaussian_log_prob(step.prev_sample, step.mean, step.std)
            torch.testing.assert_close(traj.log_probs[r, k], unscaled[0], rtol=0, atol=1e-5)
            x = step.prev_sample
    # siblings share their prefix exactly and part at their split: rows 0 and 1 at step 9
    assert all(torch.equal(lane.latents[k][0], lane.latents[k][1]) for k in range(10))
    assert not torch.equal(lane.latents[10][0], lane.latents[10][1])


def test_split_noise_is_drawn_wider_than_its_log_prob_says():
    bb = StandInBackbone(64, 16, velocity=velocity)
    lane, sigmas, tr = tree_lane(bb, rows=2, steps=2, splits=((0, 2),), shape=(64, 16))
    run_lanes(bb, [lane], height=16, width=16)
    x0 = lane.latents[0][:1]
    mean = sde_step(x0, velocity(x0, sigmas[0].view(1, 1, 1)), sigmas, 0, 1, rule="dance_grpo", eta=0.3).mean
    std = 0.3 * float(sigmas[0] - sigmas[1]) ** 0.5
    z = (lane.latents[1] - mean) / std
    assert abs(float(z.std()) - 4.0) < 0.2  # 2 x 1,024 draws widened 4x
    # scored under the unscaled std: the mean over dimensions of -z^2/2 - log(std) - log(sqrt(2 pi))
    expected = (-z[0] ** 2 / 2).mean() - math.log(std) - 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(lane.trajectory().log_probs[0, 0], expected, rtol=0, atol=1e-4)


def test_a_tree_row_does_not_depend_on_batching():
    """A node's noise comes from its own generator: the same tree run alone, beside another lane, or
    in forwards of at most 3 rows gives the same leaves."""
    alone, _, _ = tree_lane(StandInBackbone(8, 4, velocity=velocity))
    run_lanes(StandInBackbone(8, 4, velocity=velocity), [alone], height=16, width=16)
    bb = StandInBackbone(8, 4, velocity=velocity)
    mixed, _, _ = tree_lane(bb)
    other, _, _ = tree_lane(bb, prefix=("other",))
    run_lanes(bb, [other, mixed], height=16, width=16, max_batch=3)
    assert torch.equal(alone.x, mixed.x) and not torch.equal(alone.x, other.x)
