"""The data stage (``eagrl-data``): obtain, verify and process a dataset into the cohort cache every stage reads.

Prints the cohort table (patients, positives and visits per split), writes it with an example prompt into
the run directory, and logs the counts to the configured loggers. Rerunning with unchanged inputs reuses the
cache.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from eagrl.stages.runtime import loggers, prepared_datamodule, start

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> Path:
    """Prepare the cohort, print its table, save an example prompt; return the cohort cache folder."""
    from eagrl.data.cohort import cohort_table

    start(cfg, seed=False)
    output_dir = Path(cfg.paths.output_dir)
    datamodule = prepared_datamodule(cfg)
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

    metrics = {f"cohort/{split}/{key}": float(value) for split, row in table.iterrows() for key, value in row.items()}
    with loggers(cfg) as run_loggers:
        for logger in run_loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
            logger.log_metrics(metrics, step=0)
    return cohort.directory
