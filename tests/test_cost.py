"""egrpo.cost counts an iteration through the real plan, sampler and unit builder on a stand-in: its
counts are the trainer's logged passes, method by method."""

import pytest

from conftest import tiny_run_config
from egrpo.config import resolve
from egrpo.cost import iteration_cost
from egrpo.trainer import Trainer


@pytest.mark.parametrize("method", ["egrpo", "dancegrpo", "mixgrpo_flash", "g2rpo", "tempflow", "branchgrpo"])
def test_counted_passes_are_the_logged_ones(tiny_flux_dir, tmp_path, method):
    cfg = resolve(tiny_run_config(tiny_flux_dir, method), method)
    row = Trainer(cfg, tmp_path, progress=False).step(1)
    cost = iteration_cost(cfg.method, cfg.train.prompts_per_iteration, iteration=1, seed_key=(
        cfg.name, method, cfg.seed, 1), sample_batch=cfg.train.sample_batch, micro_batch=cfg.train.micro_batch)
    assert (cost.sampling_rows, cost.training_rows) == (row["passes/sampling"], row["passes/training"])
    assert (cost.trained_pairs, cost.updates) == (row["trained_pairs"], row["updates"])


def test_release_costs_per_prompt():
    """Each release's own setting, per prompt (docs/reference.md, "Cost in transformer passes")."""
    from baselines.branchgrpo import BranchGRPOMethod
    from baselines.dancegrpo import DanceGRPOMethod
    from baselines.g2rpo import G2RPOMethod
    from baselines.tempflow import TempFlowMethod

    branch = iteration_cost(BranchGRPOMethod(), 1)
    assert (branch.sampling_rows, branch.trained_pairs, branch.updates, branch.images) == (203, 218, 37, 16)
    tempflow = iteration_cost(TempFlowMethod(), 1)  # 10 anchor rows + 6 x (9 + 8 + ... + 1) ODE tail rows
    assert (tempflow.sampling_rows, tempflow.trained_pairs, tempflow.updates) == (10 + 6 * 45, 54, 2)
    assert tempflow.training_rows == 18  # the 6 branches of a step share one forward, in each of 2 steps
    # anchor + 8 x 12 heads + per branch from s = n + 1 the stride-1 tail (15 - n points) and the
    # stride-2 one (len(range(s + 1, 17, 2)) points), whose first two (s, and s + 1 at stride 1) are the
    # stride-1 tail's and share its forwards (the release runs them again: 12 x 8 x 2 rows more)
    g2rpo = iteration_cost(G2RPOMethod(), 1)
    assert g2rpo.sampling_rows == 16 + 96 + 12 * sum(15 - n + len(range(n + 2, 17, 2)) - 2 for n in range(8))
    assert (g2rpo.training_rows, g2rpo.updates) == (8, 8)  # one forward per active step serves its 12 branches
    dance = iteration_cost(DanceGRPOMethod(), 1)
    assert dance.sampling_rows == 192 and dance.trained_pairs == 12 * 9
