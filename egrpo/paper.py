"""The numbers the E-GRPO paper reports (arXiv 2601.00423, Tables 1-4 and the supplement).

Scales: HPS v2.1 and CLIP score as cosine-based scores, PickScore as logit/100, ImageReward v1.0 raw.
"""

METRICS = ("hps", "clip", "pickscore", "imagereward")

TABLE1 = {  # setting -> method -> metric -> value
    "hps": {
        "base": dict(hps=0.311, clip=0.388, pickscore=0.231, imagereward=1.089),
        "dancegrpo": dict(hps=0.353, clip=0.375, pickscore=0.228, imagereward=1.233),
        "mixgrpo": dict(hps=0.378, clip=0.358, pickscore=0.225, imagereward=1.266),
        "egrpo": dict(hps=0.391, clip=0.355, pickscore=0.232, imagereward=1.324),
    },
    "hps_clip": {
        "base": dict(hps=0.311, clip=0.388, pickscore=0.231, imagereward=1.089),
        "dancegrpo": dict(hps=0.331, clip=0.389, pickscore=0.227, imagereward=1.128),
        "mixgrpo": dict(hps=0.363, clip=0.399, pickscore=0.230, imagereward=1.436),
        "egrpo": dict(hps=0.382, clip=0.401, pickscore=0.237, imagereward=1.494),
    },
}
TABLE2 = {  # E-GRPO, HPS-only: merge length
    "fixed2": dict(hps=0.382, clip=0.290, pickscore=0.232, imagereward=1.223),
    "fixed4": dict(hps=0.374, clip=0.302, pickscore=0.230, imagereward=1.216),
    "fixed6": dict(hps=0.337, clip=0.372, pickscore=0.226, imagereward=1.298),
    "main": dict(hps=0.391, clip=0.355, pickscore=0.232, imagereward=1.324),
}
TABLE3 = {  # E-GRPO, HPS-only: trained steps
    "active_first4": dict(hps=0.370, clip=0.348, pickscore=0.231, imagereward=1.252),
    "main": dict(hps=0.391, clip=0.355, pickscore=0.232, imagereward=1.324),
    "active_second8": dict(hps=0.357, clip=0.381, pickscore=0.231, imagereward=1.250),
    "active_all": dict(hps=0.366, clip=0.359, pickscore=0.231, imagereward=1.169),
}
TABLE4 = {  # E-GRPO, HPS-only: entropy threshold tau
    "tau0": dict(hps=0.384, clip=0.349, pickscore=0.230, imagereward=1.297),
    "tau1.8": dict(hps=0.383, clip=0.352, pickscore=0.232, imagereward=1.293),
    "tau2.0": dict(hps=0.384, clip=0.344, pickscore=0.231, imagereward=1.269),
    "main": dict(hps=0.391, clip=0.355, pickscore=0.233, imagereward=1.324),
    "tau2.6": dict(hps=0.388, clip=0.355, pickscore=0.233, imagereward=1.320),
}
