"""``eagrl-rl``: Stage 2 — attention-aligned RL of the policy, EAG-RL or the GRPO / DAPO baselines
(:mod:`eagrl.stages.rl`).

    eagrl-rl dataset=tjh backbone=smollm2_135m            # EAG-RL from the newest Stage-1 SFT adapter
    eagrl-rl rl=grpo        eagrl-rl rl=dapo               # baselines from the same adapter
    eagrl-rl ablation=no_stage1                            # from the base model with a fresh adapter
    eagrl-evaluate adapter=artifacts/rl/tjh/mortality/smollm2_135m/eagrl-none-<hash>
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from eagrl.cli.entry import CONFIG_DIR, console, user_errors
from eagrl.stages import rl


@console
@hydra.main(config_path=CONFIG_DIR, config_name="rl", version_base="1.3")
@user_errors("rl")
def main(cfg: DictConfig) -> None:
    """Console script ``eagrl-rl``."""
    rl.run(cfg)


if __name__ == "__main__":
    main()
