"""What every stage does around its work: check the config, set threads and seeds, build the data module, and log to
the configured loggers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from eagrl.stages.schemas import check_groups


def start(cfg: DictConfig, seed: bool = True) -> int:
    """Begin a stage: check every config group against its schema (one-line :class:`~eagrl.errors.ConfigError`),
    set torch's threads (:func:`configure_threads`) and, with ``seed``, seed every generator with ``cfg.seed``.

    Returns the thread count in use.
    """
    check_groups(cfg)
    threads = configure_threads(cfg.get("num_threads"))
    if seed:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    return threads


def configure_threads(num_threads: int | None) -> int:
    """Set torch's CPU threads: ``num_threads``, or the cores divided among a parallel sweep's jobs.

    Returns the thread count in use.
    """
    from hydra.core.hydra_config import HydraConfig

    if not num_threads and HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        jobs = hydra_cfg.launcher.get("n_jobs") if hydra_cfg.mode.name == "MULTIRUN" else None
        if jobs and jobs > 0:
            num_threads = max(1, (os.cpu_count() or 1) // jobs)
    if num_threads:
        torch.set_num_threads(num_threads)
    return torch.get_num_threads()


def prepared_datamodule(cfg: DictConfig, **kwargs):
    """The config's :class:`~eagrl.data.datamodule.EHRDataModule` (``kwargs`` passed to it), prepared and set up."""
    datamodule = instantiate(cfg.datamodule, **kwargs)
    datamodule.prepare_data()
    datamodule.setup()
    return datamodule


@contextmanager
def loggers(cfg: DictConfig) -> Iterator[list[Logger]]:
    """Every logger of the ``logger`` group (none for ``logger=none``), finalised on exit as ``success``, or as
    ``failed`` when the block raised; a wandb run is finished so multirun jobs stay separate runs."""
    built = [instantiate(entry) for entry in (cfg.get("logger") or {}).values() if entry and "_target_" in entry]
    status = "failed"
    try:
        yield built
        status = "success"
    finally:
        for logger in built:
            logger.finalize(status)
            if type(logger).__name__ == "WandbLogger":
                logger.experiment.finish()
