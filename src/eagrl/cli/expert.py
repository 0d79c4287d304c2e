"""``eagrl-expert``: train an expert EHR model, test it with bootstrap, export per-patient salient features
(:mod:`eagrl.stages.expert`).

    eagrl-expert expert=concare dataset=tjh
    eagrl-expert -m expert=concare,adacare,retain,stagenet,gru,lstm,transformer \
        dataset=tjh,physionet2012 seed=0,1,2
    eagrl-aggregate logs/expert/multiruns/<datetime>
    eagrl-expert artifact=<artifact folder> dataset=physionet2012_b    # score a trained expert on another cohort
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from eagrl.cli.entry import CONFIG_DIR, console, user_errors
from eagrl.stages import expert


@console
@hydra.main(config_path=CONFIG_DIR, config_name="expert", version_base="1.3")
@user_errors("expert")
def main(cfg: DictConfig) -> float:
    """Console script ``eagrl-expert``; returns the test AUROC (for sweepers; with ``artifact=``, on the scored
    cohort)."""
    return expert.run(cfg)["test"]["auroc"]["mean"]


if __name__ == "__main__":
    main()
