"""DanceGRPO, MixGRPO(-Flash) and Flow-GRPO as rollout plans on egrpo's machinery (no training loops of
their own). Each module registers its method through the `egrpo.methods` entry points."""
