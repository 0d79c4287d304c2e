"""``eagrl-pipeline``: EAG-RL in one command — expert → salient features → prompting baselines → MCTS → SFT → RL →
evaluation → report (:mod:`eagrl.stages.pipeline`).

    eagrl-pipeline                                   # experiment=demo: TJH + SmolLM2-135M on the CPU (make demo)
    eagrl-pipeline experiment=tiny                   # every stage in about a minute with the tiny backbone
    eagrl-pipeline experiment=demo rl=grpo           # an override applies to every stage that has its key
    eagrl-pipeline 'stages=[expert,mcts]'            # some of the stages
    eagrl-pipeline "stage_overrides.rl=['rl.steps=2']"  # an override for one stage only
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from eagrl.cli.entry import CONFIG_DIR, console, user_errors
from eagrl.stages import pipeline


@console
@hydra.main(config_path=CONFIG_DIR, config_name="pipeline", version_base="1.3")
@user_errors("pipeline")
def main(cfg: DictConfig) -> None:
    """Console script ``eagrl-pipeline``."""
    pipeline.run(cfg)


if __name__ == "__main__":
    main()
