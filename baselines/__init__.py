"""DanceGRPO, MixGRPO(-Flash), GranularGRPO, BranchGRPO, TempFlow-GRPO and Flow-GRPO as rollout plans
on egrpo's machinery (no training loops of their own). Each module registers its method when imported;
egrpo's registry imports every module of this package (egrpo/methods.py), so a new baseline is one new
file here."""
