"""``eagrl-data``: obtain, verify and process a dataset into the cohort cache every stage reads.

    eagrl-data dataset=tjh
    eagrl-data dataset=physionet2012 dataset.step_hours=2
    eagrl-data -m dataset=tjh,physionet2012

Prints the cohort table (patients, positives and visits per split), writes it with an example prompt into
the run directory, and logs the counts to the configured loggers. Rerunning with unchanged inputs reuses the
cache.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from eagrl.utils.entry import CONFIG_DIR, build_loggers, close_loggers, console, user_errors

log = logging.getLogger(__name__)


@user_errors("data")
def run(cfg: DictConfig) -> Path:
    """Prepare the cohort, print its table, save an example prompt; return the cohort cache folder."""
    from eagrl.data.cohort import cohort_table

    output_dir = Path(cfg.paths.output_dir)
    datamodule = instantiate(cfg.datamodule)
    datamodule.prepare_data()
    datamodule.setup()
    cohort = datamodule.cohort
    table = cohort_table(cohort.patients, cohort.visits, list(cfg.dataset.labels))
    markdown = table.to_markdown()
    print(f"\n{cohort.name} cohort ({cohort.directory}):\n{markdown}\n", flush=True)
    (output_dir / "cohort.md").write_text(markdown + "\n")
    if cfg.show_prompt:
        prompt = datamodule.prompts("test", cfg.task, cfg.prompt)[0]
        text = f"[system]\n{prompt.system}\n\n[user]\n{prompt.user}\n"
        (output_dir / "example_prompt.txt").write_text(text)
        print(f"example prompt (test patient {datamodule.arrays['test'].patient_ids[0]}):\n{text}", flush=True)

    loggers = build_loggers(cfg.get("logger"))
    status = "failed"
    try:
        metrics = {
            f"cohort/{split}/{key}": float(value) for split, row in table.iterrows() for key, value in row.items()
        }
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
            logger.log_metrics(metrics, step=0)
        status = "success"
    finally:
        close_loggers(loggers, status)
    return cohort.directory


@console
@hydra.main(config_path=CONFIG_DIR, config_name="data", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Console script ``eagrl-data``."""
    run(cfg)


if __name__ == "__main__":
    main()
