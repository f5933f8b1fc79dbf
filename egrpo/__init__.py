"""E-GRPO reproduction harness: entropy-aware GRPO for flow-matching text-to-image models.

The math lives in small pure modules (`schedule`, `sde`, `merge`); the FLUX backbone in `flux`;
sampling in `sampler`. See README.md for the map.
"""

__version__ = "0.1.0"
