"""The embedded default world: procedurally captioned shape images, its scorers and its base model.

Everything here runs offline on a CPU in minutes and goes through the same backbone, sampler,
trainer and reward interface as FLUX.1-dev.
"""
