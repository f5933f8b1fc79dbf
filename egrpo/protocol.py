"""What the evaluation jobs read, as validated models without torch (the Snakefile writes them at
parse time): the evaluation protocol of `egrpo evaluate`, `egrpo render` and `egrpo train --evaluate`
(egrpo.evaluate draws and scores the images), and Fig. 1a's spec of `egrpo variance` (egrpo.variance).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from .config import GUIDANCE, MAX_SEQUENCE_LENGTH, Config, DeterminismConfig, Strict, resolve
from .plans import EGRPOMethod
from .rewards import RewardName, check_options


class EvalSpec(Strict):
    """How the test images are drawn: the sampler, its schedule, size and guidance, and their seeds."""

    sampler: Literal["ode", "flux_pipeline"] = Field(
        "ode", description="`ode`: our sampler on the training schedule; `flux_pipeline`: diffusers' FluxPipeline "
        "with its own schedule (the paper's protocol)")
    num_steps: int = Field(16, ge=1)
    shift: float = Field(3.0, gt=0, description="time shift of the `ode` sampler's schedule")
    height: int = Field(32, ge=16)
    width: int = Field(32, ge=16)
    guidance: float = Field(GUIDANCE, ge=0, description="guidance embedding of `flux_pipeline`")
    batch: int = Field(16, ge=1, description="images per sampler call")
    seed: int = Field(42, ge=0, description="evaluation seed: each image's seed derives from it, the prompt and the sample")
    samples: int = Field(1, ge=1, description="images per test prompt, averaged per prompt by the tables (the paper: 1)")
    dtype: Literal["auto", "fp16", "bf16", "fp32"] = Field(
        "auto", description="the model's dtype while sampling: `auto` is fp16 on a GPU, as the release's eval.py "
        "casts the trained weights and the pipeline, and fp32 on a CPU")


class Metric(Strict):
    """A metric: a registered reward and its options (its weight paths), checked against the reward's
    options model."""

    reward: RewardName
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _options(self):
        check_options(self.reward, self.options, ("options",))
        return self


PromptLimit = Annotated[int, Field(ge=1)] | None  # the first N test prompts (None: all)


class ProtocolSettings(Strict):
    """What an evaluation protocol shares with the Snakemake config's `eval:` section."""

    sampler: EvalSpec = Field(default_factory=EvalSpec, description="how the test images are drawn")
    max_sequence_length: int = Field(MAX_SEQUENCE_LENGTH, ge=1, description="T5 tokens of a test prompt")
    precision: Literal["fp32", "amp", "bf16"] = Field(
        "fp32", description="the metrics' precision (egrpo.rewards.images): fp32 as the releases' evaluation "
        "scripts, amp (fp32 weights under fp16 autocast on a GPU) or bf16")
    score_text: Literal["prompt", "filename"] = Field(
        "prompt", description="what each image is scored against: its prompt, or the release's file name "
        "(C eval.py's sanitize_filename: 9 characters replaced by _, cut at 200 characters)")


class Protocol(ProtocolSettings):
    """An evaluation protocol: the file `egrpo evaluate`, `egrpo render` and `egrpo train --evaluate`
    read (the DAG writes results/configs/eval/<hash>.json). Relative paths are relative to the working directory."""

    prompts: str = Field(description="the test prompt file")
    limit: PromptLimit = Field(None, description="the first N prompts only (null: all)")
    metrics: dict[str, Metric] = Field(description="table column -> the reward that scores it")
    determinism: DeterminismConfig = Field(
        default_factory=DeterminismConfig, description="which kernels the evaluating process may run "
        "(egrpo/determinism.py); `egrpo train --evaluate` needs the run config's own")


class VarianceSettings(Strict):
    """Fig. 1a's budget: how many test prompts, how many branches per step."""

    limit: int = Field(8, ge=1, description="the first N test prompts")
    group_size: int = Field(16, ge=2, description="SDE branches per step")


class VarianceSpec(VarianceSettings):
    """What `egrpo variance` reads (the DAG writes results/configs/variance/<hash>.json): the run config
    whose schedule, noise level, merge rule and resolution Fig. 1a uses, the prompts and the metric."""

    run: Config = Field(description="a resolved run config of a method with E-GRPO's merge rule")
    prompts: str = Field(description="the test prompt file")
    metric: Metric
    max_batch: int | None = Field(None, ge=1, description="rows per forward (default: the run's train.sample_batch)")

    @field_validator("run", mode="before")
    @classmethod
    def _resolve(cls, raw):
        return raw if isinstance(raw, Config) else resolve(raw)

    @field_validator("run")
    @classmethod
    def _merges(cls, run: Config) -> Config:
        if not isinstance(run.method, EGRPOMethod):
            raise ValueError(f"Fig. 1a needs E-GRPO's merge rule (an EGRPOMethod), got method {run.method.name!r}")
        return run
