"""Plumbing shared by every ``eagrl-<stage>`` entry point: the config location and one-line user errors."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

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


def with_default_experiment(overrides: Sequence[str], experiment: str) -> list[str]:
    """``overrides`` after ``experiment=<experiment>``, unless they choose an experiment themselves."""
    chosen = any(override.startswith("experiment=") for override in overrides)
    return [*([] if chosen else [f"experiment={experiment}"]), *overrides]


def compose_entry(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """``conf/<name>.yaml`` composed outside a Hydra app (a notebook, a benchmark) with ``overrides``;
    ``paths.output_dir`` is the current directory unless they set it."""
    from hydra import compose, initialize_config_dir

    output = [] if any(override.startswith("paths.output_dir=") for override in overrides) else ["paths.output_dir=."]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(name, overrides=[*overrides, *output])
