"""Shared fixtures: the real config tree composed with Hydra, and real cohorts built once per session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from omegaconf import DictConfig

from eagrl.cli.entry import compose_entry

if os.environ.get("PYTEST_XDIST_WORKER"):
    # make test runs one pytest-xdist worker per core: one torch thread each, in-process and in every command line
    # a test starts (they inherit the environment), so the workers do not fight over the cores
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
#: real data beside the checkout (CI: ../shared/data); EAGRL_RAW_SOURCE points elsewhere
RAW_SOURCE = os.environ.get("EAGRL_RAW_SOURCE", str(REPO.parent / "shared" / "data"))


def compose_config(config_name: str, overrides: list[str], tmp_dir: Path, raw_source: str = RAW_SOURCE) -> DictConfig:
    """Compose a real entry config with run paths redirected into ``tmp_dir`` (raw files from ``raw_source``)."""
    return compose_entry(
        config_name,
        [
            f"paths.raw_source={raw_source}",
            f"paths.data_dir={tmp_dir / 'data'}",
            f"paths.log_dir={tmp_dir / 'logs'}",
            f"paths.output_dir={tmp_dir / 'run'}",
            *overrides,
        ],
    )


def cli_command(stage: str, overrides: list[str], tmp_dir: Path, raw_source: str = RAW_SOURCE):
    """The command line and environment of ``eagrl-<stage>`` with outputs under ``tmp_dir`` (run it there).

    Hydra's flags (``-m``, ``--cfg job``) go before every override: argparse stops reading overrides at a flag.
    """
    flags = [item for item in overrides if item.startswith("-") or item in ("job", "hydra", "all")]
    command = [
        sys.executable,
        "-m",
        f"eagrl.cli.{stage}",
        *flags,
        f"paths.data_dir={tmp_dir / 'data'}",
        f"paths.log_dir={tmp_dir / 'logs'}",
        f"hydra.run.dir={tmp_dir / 'run'}",
        *(item for item in overrides if item not in flags),
    ]
    return command, {**os.environ, "EAGRL_RAW_SOURCE": raw_source, "WANDB_SILENT": "true"}


def run_stage(stage: str, overrides: list[str], tmp_dir: Path, raw_source: str = RAW_SOURCE):
    """``eagrl.stages.<stage>.run`` in this process on the composed entry config, with every output under ``tmp_dir``
    as :func:`run_cli` puts it (a user error raises :class:`~eagrl.errors.EAGRLError`, which the command prints)."""
    import importlib

    paths = [f"paths.artifact_dir={tmp_dir / 'artifacts'}", f"paths.model_dir={tmp_dir / 'models'}"]
    cfg = compose_config(stage, [*paths, *overrides], tmp_dir, raw_source)
    return importlib.import_module(f"eagrl.stages.{stage}").run(cfg)


def user_error(stage: str, overrides: list[str], tmp_dir: Path, raw_source: str = RAW_SOURCE) -> str:
    """The one-line message of the :class:`~eagrl.errors.EAGRLError` that :func:`run_stage` raises (the command
    prints it as ``eagrl-<stage>: error: <message>`` and exits 2)."""
    from eagrl.errors import EAGRLError

    with pytest.raises(EAGRLError) as error:
        run_stage(stage, overrides, tmp_dir, raw_source)
    message = str(error.value)
    assert "\n" not in message, message
    return message


def run_cli(stage: str, overrides: list[str], tmp_dir: Path, **kwargs) -> subprocess.CompletedProcess:
    """Run ``eagrl-<stage>`` in a subprocess with outputs under ``tmp_dir``."""
    command, env = cli_command(stage, overrides, tmp_dir, kwargs.pop("raw_source", RAW_SOURCE))
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_dir, **kwargs)


def kill_when(stage: str, overrides: list[str], tmp_dir: Path, root: Path, pattern: str) -> None:
    """Start ``eagrl-<stage>`` (in ``tmp_dir``) and SIGKILL it as soon as a file matching ``pattern`` appears under
    ``root``; fails when the run ends, or 600 s pass, first."""
    command, env = cli_command(stage, overrides, tmp_dir)
    process = subprocess.Popen(command, cwd=tmp_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not list(root.rglob(pattern)):
        assert time.monotonic() < deadline and process.poll() is None, f"eagrl-{stage} ended before {pattern}"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """One data cache shared by the session's tests, and by every pytest-xdist worker (each dataset processed once)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return tmp_path_factory.getbasetemp().parent / "shared"
    return tmp_path_factory.mktemp("shared")


def _datamodule(name: str, data_root: Path):
    from eagrl.data.datamodule import EHRDataModule

    cfg = compose_config("data", [f"dataset={name}"], data_root)
    datamodule = EHRDataModule(
        dataset=cfg.dataset, task=cfg.task.name, raw_source=RAW_SOURCE, data_dir=str(data_root / "data")
    )
    data_root.mkdir(parents=True, exist_ok=True)
    with FileLock(data_root / f"{name}.lock"):  # the first worker processes the cohort, the others read it
        datamodule.prepare_data()
    datamodule.setup()
    return datamodule


@pytest.fixture(scope="session")
def tjh(data_root):
    """The real TJH cohort through the EHRDataModule."""
    return _datamodule("tjh", data_root)


@pytest.fixture(scope="session")
def physionet(data_root):
    """The real PhysioNet 2012 A+B cohort through the EHRDataModule."""
    return _datamodule("physionet2012", data_root)


@pytest.fixture(scope="session")
def mimic4_demo(data_root):
    """The real MIMIC-IV demo (MEDS, downloaded once per session from PyPI) through the EHRDataModule."""
    return _datamodule("mimic4_demo", data_root)
