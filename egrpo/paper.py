"""The numbers the E-GRPO paper reports (arXiv 2601.00423, Tables 1-4 and the supplement).

Scales: HPS v2.1 and CLIP score as cosine-based scores, PickScore as logit/100, ImageReward v1.0 raw.
"""

METRICS = ("hps", "clip", "pickscore", "imagereward")

TABLE1 = {  # setting -> method -> metric -> value (GranularGRPO = g2rpo, TempFlowGRPO = tempflow)
    "hps": {
        "base": dict(hps=0.311, clip=0.388, pickscore=0.231, imagereward=1.089),
        "dancegrpo": dict(hps=0.353, clip=0.375, pickscore=0.228, imagereward=1.233),
        "mixgrpo": dict(hps=0.378, clip=0.358, pickscore=0.225, imagereward=1.266),
        "g2rpo": dict(hps=0.385, clip=0.355, pickscore=0.229, imagereward=1.313),
        "branchgrpo": dict(hps=0.358, clip=0.365, pickscore=0.231, imagereward=1.311),
        "tempflow": dict(hps=0.382, clip=0.357, pickscore=0.231, imagereward=1.264),
        "egrpo": dict(hps=0.391, clip=0.355, pickscore=0.232, imagereward=1.324),
    },
    "hps_clip": {
        "base": dict(hps=0.311, clip=0.388, pickscore=0.231, imagereward=1.089),
        "dancegrpo": dict(hps=0.331, clip=0.389, pickscore=0.227, imagereward=1.128),
        "mixgrpo": dict(hps=0.363, clip=0.399, pickscore=0.230, imagereward=1.436),
        "g2rpo": dict(hps=0.377, clip=0.400, pickscore=0.236, imagereward=1.490),
        "branchgrpo": dict(hps=0.342, clip=0.384, pickscore=0.230, imagereward=1.243),
        "tempflow": dict(hps=0.310, clip=0.388, pickscore=0.230, imagereward=1.106),
        "egrpo": dict(hps=0.382, clip=0.401, pickscore=0.237, imagereward=1.494),
    },
}
# E-GRPO ablations (HPS-only), keyed by the value of the method field each varies
TABLE2 = {  # fixed_merge: merge length (None = adaptive, the main run)
    2: dict(hps=0.382, clip=0.290, pickscore=0.232, imagereward=1.223),
    4: dict(hps=0.374, clip=0.302, pickscore=0.230, imagereward=1.216),
    6: dict(hps=0.337, clip=0.372, pickscore=0.226, imagereward=1.298),
    None: dict(hps=0.391, clip=0.355, pickscore=0.232, imagereward=1.324),
}
TABLE3 = {  # active: trained steps
    "first4": dict(hps=0.370, clip=0.348, pickscore=0.231, imagereward=1.252),
    "first8": dict(hps=0.391, clip=0.355, pickscore=0.232, imagereward=1.324),
    "second8": dict(hps=0.357, clip=0.381, pickscore=0.231, imagereward=1.250),
    "all": dict(hps=0.366, clip=0.359, pickscore=0.231, imagereward=1.169),
}
TABLE4 = {  # tau: entropy threshold (0 = no merging)
    0: dict(hps=0.384, clip=0.349, pickscore=0.230, imagereward=1.297),
    1.8: dict(hps=0.383, clip=0.352, pickscore=0.232, imagereward=1.293),
    2.0: dict(hps=0.384, clip=0.344, pickscore=0.231, imagereward=1.269),
    2.2: dict(hps=0.391, clip=0.355, pickscore=0.233, imagereward=1.324),
    2.6: dict(hps=0.388, clip=0.355, pickscore=0.233, imagereward=1.320),
}
ABLATIONS = {"egrpo": {"fixed_merge": TABLE2, "active": TABLE3, "tau": TABLE4}}  # method -> field -> table
