"""``eagrl-data``: obtain, verify and process a dataset into the cohort cache every stage reads
(:mod:`eagrl.stages.data`).

    eagrl-data dataset=tjh
    eagrl-data dataset=physionet2012 dataset.step_hours=2
    eagrl-data -m dataset=tjh,physionet2012
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from eagrl.cli.entry import CONFIG_DIR, console, user_errors
from eagrl.stages import data


@console
@hydra.main(config_path=CONFIG_DIR, config_name="data", version_base="1.3")
@user_errors("data")
def main(cfg: DictConfig) -> None:
    """Console script ``eagrl-data``."""
    data.run(cfg)


if __name__ == "__main__":
    main()
