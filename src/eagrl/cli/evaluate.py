"""``eagrl-evaluate``: an LLM answers every patient of a split, then bootstrap AUROC / AUPRC
(:mod:`eagrl.stages.evaluate`).

    eagrl-evaluate backbone=smollm2_135m prompt=pqd dataset=tjh
    eagrl-evaluate -m prompt=vanilla,think_answer,pqd
    eagrl-evaluate adapter=<folder saved by eagrl-sft or eagrl-rl>
    eagrl-evaluate adapter=<folder> dataset=physionet2012_b   # an external cohort (dataset.split=none: all is test)
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from eagrl.cli.entry import CONFIG_DIR, console, user_errors
from eagrl.stages import evaluate


@console
@hydra.main(config_path=CONFIG_DIR, config_name="evaluate", version_base="1.3")
@user_errors("evaluate")
def main(cfg: DictConfig) -> float:
    """Console script ``eagrl-evaluate``; returns the AUROC (for sweepers)."""
    metrics = evaluate.run(cfg)
    return metrics[metrics["split"]]["auroc"]["mean"]


if __name__ == "__main__":
    main()
