"""DanceGRPO and MixGRPO as rollout plans on egrpo's machinery (no training loops of their own)."""
