import numpy as np
import pandas as pd
import pytest
import torch

from egrpo.errors import ConfigError
from egrpo.config import load_spec
from egrpo.evaluate import bootstrap_ci, evaluate, summarise
from egrpo.protocol import EvalSpec, Protocol
from egrpo.rewards import build_reward

PROMPTS = ["a red circle", "a blue square", "a green star", "a cat", "a dog"]


@pytest.mark.parametrize("sampler", ["ode", "flux_pipeline"])
def test_sharded_evaluation_equals_one_process(backbone, sampler, tmp_path):
    """Per-prompt seeds: 2 shards give exactly the per-image results of 1 process."""
    spec = EvalSpec(sampler=sampler, num_steps=4, height=64, width=64, batch=2, seed=7)
    metrics = {"bright": build_reward("brightness")}
    one = evaluate(backbone, PROMPTS, metrics, spec, image_dir=tmp_path / "one")
    shards = pd.concat([evaluate(backbone, PROMPTS, metrics, spec, rank=r, world=2) for r in range(2)])
    shards = shards.sort_values("prompt_index").reset_index(drop=True)
    pd.testing.assert_frame_equal(one, shards, check_exact=False, atol=1e-5, rtol=1e-5)
    assert list(one.prompt_index) == list(range(5)) and one.seed.nunique() == 5
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == [f"{k:05d}.png" for k in range(5)]


def test_several_samples_per_prompt(backbone, tmp_path):
    """samples: K gives K seeded images per prompt; sample 0 is the one-sample protocol's image, the
    others have seeds of their own; 2 shards equal 1 process; the summary averages per prompt."""
    spec = EvalSpec(num_steps=3, height=64, width=64, batch=4, seed=7)
    metrics = {"bright": build_reward("brightness")}
    one = evaluate(backbone, PROMPTS, metrics, spec)
    three = evaluate(backbone, PROMPTS, metrics, spec.model_copy(update={"samples": 3}), image_dir=tmp_path)
    assert list(three.prompt_index) == [k for k in range(5) for _ in range(3)] and three.seed.nunique() == 15
    first = three[three["sample"] == 0].reset_index(drop=True)
    pd.testing.assert_frame_equal(first, one, check_exact=False, atol=1e-5, rtol=1e-5)
    assert not np.allclose(three.bright[three["sample"] == 1], one.bright)  # other seeds, other images
    shards = pd.concat([evaluate(backbone, PROMPTS, metrics, spec.model_copy(update={"samples": 3}), rank=r, world=2) for r in range(2)])
    shards = shards.sort_values(["prompt_index", "sample"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(three, shards, check_exact=False, atol=1e-5, rtol=1e-5)
    assert len(list(tmp_path.iterdir())) == 15 and (tmp_path / "00004.2.png").exists()
    row = summarise(three, ["bright"]).iloc[0]
    assert row["n"] == 5 and np.isclose(row["mean"], three.bright.mean())
    with pytest.raises(ConfigError, match="sampler.samples"):
        load_spec(Protocol, overrides=["prompts=p.txt", "metrics={}", "sampler.samples=0"])


def test_summary_has_bootstrap_ci():
    df = pd.DataFrame({"m": np.linspace(0, 1, 101)})
    row = summarise(df, ["m"]).iloc[0]
    assert row["ci_low"] < row["mean"] < row["ci_high"] and row["n"] == 101
    lo, hi = bootstrap_ci(np.ones(10))
    assert lo == hi == 1.0


def test_evaluate_cli_writes_per_image_csv(tiny_flux_dir, tmp_path):
    import subprocess
    import sys

    (tmp_path / "p.txt").write_text("\n".join(PROMPTS))
    # no protocol file: the protocol from --set alone, the sampler's other keys its defaults
    sets = [f"prompts={tmp_path / 'p.txt'}", "metrics={hps: {reward: brightness}}", "sampler.num_steps=3",
            "sampler.height=64", "sampler.width=64"]
    r = subprocess.run([sys.executable, "-m", "egrpo", "evaluate", "--model", str(tiny_flux_dir),
                        *[a for kv in sets for a in ("--set", kv)], "--out", str(tmp_path / "e.csv")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(tmp_path / "e.csv")
    assert list(df.columns) == ["prompt_index", "sample", "prompt", "seed", "hps"] and len(df) == 5
    assert torch.isfinite(torch.tensor(df.hps.values)).all()
    summary = pd.read_csv(tmp_path / "e.summary.csv")
    assert list(summary.metric) == ["hps"] and summary.ci_low[0] <= summary["mean"][0] <= summary.ci_high[0]


def test_release_file_name_is_the_text_the_release_scores():
    """C names each image after its prompt (\\/:*?"<>| replaced, cut at 200 characters, trailing space
    dropped) and scores the name: score_text `filename` reproduces it; `prompt` scores the prompt."""
    from egrpo.evaluate import release_file_name

    assert release_file_name('A stop sign with the phrase "hammer time" written on it.') == \
        "A stop sign with the phrase _hammer time_ written on it."
    assert release_file_name('a/b\\c:d*e?f"g<h>i|j') == "a_b_c_d_e_f_g_h_i_j"
    long = "word " * 60
    assert release_file_name(long) == long[:200].rstrip() and len(release_file_name(long)) == 199
    assert release_file_name("   ") == "untitled"


def test_score_text_reaches_every_metric(backbone):
    prompts = ['a "red" circle', "x" * 230]
    seen = []

    def recording(images, texts):
        seen.extend(texts)
        return images.mean(dim=(1, 2, 3))

    spec = EvalSpec(num_steps=2, height=32, width=32)
    df = evaluate(backbone, prompts, {"m": recording}, spec)
    assert seen == prompts and "scored_text" not in df
    seen.clear()
    df = evaluate(backbone, prompts, {"m": recording}, spec, score_text="filename")
    assert seen == ["a _red_ circle", "x" * 200] and list(df.scored_text) == seen and list(df.prompt) == prompts


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_the_model_samples_in_the_releases_dtype():
    """auto: C's fp16 on a GPU (the trained fp32 weights cast at load), fp32 on a CPU."""
    from egrpo.evaluate import model_dtype

    assert model_dtype(EvalSpec(), torch.device("cuda")) == torch.float16
    assert model_dtype(EvalSpec(), torch.device("cpu")) == torch.float32
    assert model_dtype(EvalSpec(dtype="bf16"), torch.device("cuda")) == torch.bfloat16
    with pytest.raises(ConfigError, match="sampler.dtype"):
        load_spec(Protocol, overrides=["prompts=p.txt", "metrics={}", "sampler.dtype=half"])
    with pytest.raises(ConfigError, match="score_text"):
        load_spec(Protocol, overrides=["prompts=p.txt", "metrics={}", "score_text=file"])
