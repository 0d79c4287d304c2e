"""Plumbing shared by every ``eagrl-<stage>`` entry point: config location, one-line user errors, loggers."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from eagrl.errors import EAGRLError

log = logging.getLogger(__name__)

#: the top-level ``conf/`` folder of this checkout; ``EAGRL_CONFIG_DIR`` points elsewhere.
CONFIG_DIR = os.environ.get("EAGRL_CONFIG_DIR", str(Path(__file__).resolve().parents[3] / "conf"))
#: exit status of a run stopped by a user-fixable error
USER_ERROR_EXIT = 2


def user_errors(stage: str) -> Callable:
    """Decorate a Hydra task: an :class:`EAGRLError` ends the run with one line on stderr and exit 2; in a
    multirun it ends that job only (:func:`console` exits 2 once the others ran)."""

    def decorate(task: Callable[[DictConfig], object]) -> Callable[[DictConfig], object]:
        @functools.wraps(task)
        def wrapper(cfg: DictConfig):
            try:
                from eagrl.utils.schemas import check_groups

                check_groups(cfg)
                return task(cfg)
            except EAGRLError as error:
                log.error("%s", error)
                print(f"eagrl-{stage}: error: {error}", file=sys.stderr, flush=True)
                if _in_multirun():
                    raise  # Hydra records the job as failed and runs the others; see console()
                sys.exit(USER_ERROR_EXIT)

        return wrapper

    return decorate


def _in_multirun() -> bool:
    """Whether the task runs as one job of a Hydra multirun (``-m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def console(hydra_main: Callable[[], object]) -> Callable[[], None]:
    """The console script around a ``@hydra.main`` task. Hydra's sweeper runs every job of a multirun, then
    re-raises the first job's error; a user error then ends in one line and exit 2 instead of a traceback (each
    failed job printed its own line; ``eagrl-aggregate`` lists them)."""

    @functools.wraps(hydra_main)
    def script() -> None:
        if not {"-m", "--multirun"} & set(sys.argv[1:]):
            hydra_main()  # a single run: user errors end in the task, config errors in Hydra's short message
            return
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # let the sweeper's error reach this function
        try:
            hydra_main()
        except EAGRLError as error:
            print(f"error: a job of the multirun failed ({error}); the other jobs ran", file=sys.stderr, flush=True)
            sys.exit(USER_ERROR_EXIT)
        except (HydraException, OmegaConfBaseException) as error:
            print(f"error: {str(error).splitlines()[0]}", file=sys.stderr, flush=True)
            sys.exit(USER_ERROR_EXIT)

    return script


def report(cfg: DictConfig, metrics: dict, summary: str) -> None:
    """Copy a stage's metrics into the run directory (where ``eagrl-aggregate`` looks) and print its summary."""
    from eagrl.utils.artifacts import write_json

    write_json(Path(cfg.paths.output_dir) / "metrics.json", metrics)
    print(summary, flush=True)


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


def build_loggers(logger_cfg: DictConfig | None) -> list[Logger]:
    """Instantiate every logger under the ``logger`` group (none for ``logger=none``)."""
    if not logger_cfg:
        return []
    return [instantiate(entry) for entry in logger_cfg.values() if entry and "_target_" in entry]


def close_loggers(loggers: list[Logger], status: str) -> None:
    """Finalise loggers; a wandb run is finished so multirun jobs stay separate runs."""
    for logger in loggers:
        logger.finalize(status)
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.finish()
