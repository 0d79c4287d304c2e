"""``eagrl-sft``: Stage 1 SFT of the policy on the selected MCTS trajectories, or the label-only SFT baseline
(:mod:`eagrl.stages.sft`).

    eagrl-sft dataset=tjh backbone=smollm2_135m                  # on the newest eagrl-mcts selection
    eagrl-sft trajectories=artifacts/mcts/tjh/mortality/smollm2_135m/<hash>
    eagrl-sft sft=label_only                                     # baseline: the probability, no reasoning
    eagrl-sft sft=expert_label                                   # no search: the expert's features and the label
    eagrl-evaluate adapter=artifacts/sft/tjh/mortality/smollm2_135m/trajectory-<hash>
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from eagrl.cli.entry import CONFIG_DIR, console, user_errors
from eagrl.stages import sft


@console
@hydra.main(config_path=CONFIG_DIR, config_name="sft", version_base="1.3")
@user_errors("sft")
def main(cfg: DictConfig) -> None:
    """Console script ``eagrl-sft``."""
    sft.run(cfg)


if __name__ == "__main__":
    main()
