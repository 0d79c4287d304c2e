"""``eagrl-mcts``: Stage 1 search — expert-guided MCTS reasoning trajectories for every training patient
(:mod:`eagrl.stages.mcts`).

    eagrl-expert expert=concare dataset=tjh      # the expert whose salient features guide the search
    eagrl-mcts dataset=tjh backbone=smollm2_135m
    eagrl-mcts experiment=tiny            # seconds, with the tiny random backbone
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from eagrl.cli.entry import CONFIG_DIR, console, user_errors
from eagrl.stages import mcts


@console
@hydra.main(config_path=CONFIG_DIR, config_name="mcts", version_base="1.3")
@user_errors("mcts")
def main(cfg: DictConfig) -> None:
    """Console script ``eagrl-mcts``."""
    mcts.run(cfg)


if __name__ == "__main__":
    main()
