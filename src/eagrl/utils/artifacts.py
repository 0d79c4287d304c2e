"""Deterministic artifact folders: a stage's outputs live at a path derived from the config that made them,
so a rerun finds them (skip when complete, resume from the last checkpoint when not). :class:`StageArtifact` is the
one place that computes such a path and runs that life cycle; every stage uses it.

A finished artifact is sealed: ``checksums.json`` (sha256 of every file but the checkpoints) and then
``metrics.json``, the marker, last. Reusing or reading one verifies the checksums, so a truncated or edited file
ends in one line naming it instead of being silently reused; a corrupt checkpoint is refused the same way.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from eagrl.errors import ArtifactError, ConfigError

log = logging.getLogger(__name__)

#: the marker of a finished artifact (written last)
METRICS = "metrics.json"
#: sha256 of a finished artifact's files (written just before the marker)
CHECKSUMS = "checksums.json"
#: sub-folders left out of the checksums: training checkpoints, rewritten while a stage runs
UNSEALED = ("checkpoints",)

#: config keys (dotted) that do not change a stage's result: where files go, how it is logged or launched
VOLATILE_KEYS = (
    "paths", "logger", "hydra", "num_threads", "overwrite", "show_prompt",
    # the pipeline's own keys, which an experiment may set and every stage's config then carries
    "stages", "baselines", "stage_overrides", "evaluate_adapters", "tags",
    "trainer.default_root_dir", "datamodule.raw_source", "datamodule.data_dir", "datamodule.num_workers",
    "generation.batch_size", "sft.frozen_cache_gb", "rl.frozen_cache_gb",
)  # fmt: skip


def config_hash(
    cfg: DictConfig, length: int = 8, exclude: tuple[str, ...] = (), inputs: Mapping[str, str] | None = None
) -> str:
    """Short sha256 of the resolved config without :data:`VOLATILE_KEYS` and ``exclude``, with paths written
    relative to the project's path roots (:func:`_portable`).

    ``inputs`` (name -> content digest of an input artifact) enter the hash too, so a stage that reads another
    stage's output by content is redone when that output changes.
    """
    content = _portable(OmegaConf.to_container(cfg, resolve=True), _path_roots(cfg))
    for key in (*VOLATILE_KEYS, *exclude):
        *parents, leaf = key.split(".")
        node = content
        for parent in parents:
            node = node.get(parent) or {}
        node.pop(leaf, None)
    if inputs:
        content["__inputs__"] = dict(inputs)
    payload = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


#: the ``paths`` keys a config value may point into (a path under several is written against the deepest)
PATH_ROOTS = ("artifact_dir", "model_dir", "data_dir", "log_dir", "root_dir")


def _path_roots(cfg: DictConfig) -> list[tuple[str, Path]]:
    """``(key, absolute folder)`` of every :data:`PATH_ROOTS` entry ``cfg.paths`` sets, deepest folder first."""
    paths = cfg.get("paths") or {}
    roots = [(key, Path(str(paths[key])).expanduser().resolve()) for key in PATH_ROOTS if paths.get(key) is not None]
    return sorted(roots, key=lambda root: len(root[1].parts), reverse=True)


def _as_path(text: str) -> Path | None:
    """``text`` as an absolute path when it is written as one: absolute, ``~``, ``./`` or ``../``, or relative to the
    current directory and existing there (``artifacts/sft/...``); None for any other string (a unit such as ``U/L``,
    a URL, prompt text)."""
    if "/" not in text or "\x00" in text:
        return None
    explicit = text.startswith(("/", "~", "./", "../"))
    try:
        path = Path(text).expanduser()
        return path.resolve() if explicit or path.exists() else None
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a name the file system refuses
        return None


def _portable(node, roots: list[tuple[str, Path]]):
    """``node`` with every path string under a path root written as ``${paths.<key>}/<relative>`` (the deepest
    root's): an artifact's hash is the same whichever folder the project lives in (``EAGRL_ROOT``, a clone elsewhere,
    a cluster mount) and however a path was written (absolute, ``./``-relative or relative)."""
    if isinstance(node, dict):
        return {key: _portable(value, roots) for key, value in node.items()}
    if isinstance(node, list):
        return [_portable(value, roots) for value in node]
    if isinstance(node, str) and roots and (absolute := _as_path(node)) is not None:
        for key, root in roots:
            if absolute.is_relative_to(root):
                return f"${{paths.{key}}}/{absolute.relative_to(root).as_posix()}"
    return node


def file_digest(path: Path) -> str:
    """sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: Path, content: dict) -> None:
    """Write JSON atomically (a killed run never leaves a half-written file)."""
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(json.dumps(content, indent=1, default=str))
    staging.replace(path)


def staging_folder(target: Path) -> Path:
    """A fresh, not yet created, per-process sibling of ``target`` to build it in before :func:`publish_folder`."""
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    return staging


def publish_folder(staging: Path, target: Path, is_complete: Callable[[Path], bool]) -> bool:
    """Move the finished folder ``staging`` to ``target``; return whether it was published.

    A ``target`` that ``is_complete`` says is whole and current stays (another process finished first: ``staging``
    is discarded, both hold the same content); an incomplete or stale one is replaced. Check and move happen under
    an exclusive lock on a hidden sibling file, so concurrent writers (a multirun, parallel pipelines) never
    remove each other's published folder.
    """
    lock_path = target.with_name(f".{target.name}.lock")
    try:
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if is_complete(target):
                return False
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
            return True
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def seal(folder: Path, metrics: dict) -> None:
    """Finish an artifact: write the checksums of its files, then ``metrics`` as its marker ``metrics.json``."""
    files = [
        path for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in (CHECKSUMS, METRICS)
        and path.relative_to(folder).parts[0] not in UNSEALED
    ]  # fmt: skip
    write_json(folder / CHECKSUMS, {str(path.relative_to(folder)): file_digest(path) for path in files})
    write_json(folder / METRICS, metrics)


def verify(folder: Path) -> None:
    """Raise :class:`ArtifactError` naming the first file of ``folder`` that is missing or differs from its
    checksum. An artifact written before checksums existed (no ``checksums.json``) passes."""
    sums_path = folder / CHECKSUMS
    if not sums_path.is_file():
        return
    advice = f"delete {folder} (or rerun with overwrite=true) to redo the stage"
    try:
        sums = json.loads(sums_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{sums_path}: unreadable ({error}); {advice}") from None
    for name, digest in sums.items():
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"{path}: missing from a finished artifact; {advice}")
        if file_digest(path) != digest:
            raise ArtifactError(f"{path}: truncated or changed since it was written (checksum differs); {advice}")


def finished_metrics(folder: Path, overwrite: bool = False) -> dict | None:
    """The metrics of the finished artifact ``folder`` after verifying it; None when it is unfinished or when
    ``overwrite`` asks to redo it."""
    path = folder / METRICS
    if overwrite or not path.is_file():
        return None
    verify(folder)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path}: unreadable ({error}); delete {folder} (or rerun with overwrite=true)") from None


def resumable(checkpoint: Path) -> Path | None:
    """``checkpoint`` when it exists and loads, None when it does not exist; a truncated or corrupt one raises
    :class:`ArtifactError` (resuming from it would crash mid-run or silently restart)."""
    if not checkpoint.is_file():
        return None
    import torch

    try:
        torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)
    except Exception as error:  # torch / pickle / zipfile raise many types for a damaged file
        raise ArtifactError(
            f"{checkpoint}: unreadable checkpoint ({type(error).__name__}); delete it to restart the stage from scratch"
        ) from None
    return checkpoint


def epoch_checkpoint(folder: Path):
    """A Lightning callback writing ``folder/last.ckpt`` at every epoch end, the newest replacing the previous
    (Lightning's ``save_last`` writes only alongside a top-k save; this is the top-1 of no monitor). A DataLoader
    cannot resume mid-epoch, so a killed epoch is redone whole, in the same order."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    return ModelCheckpoint(
        dirpath=folder, filename="last", save_top_k=1, monitor=None, save_on_train_epoch_end=True,
        enable_version_counter=False,
    )  # fmt: skip


def find_artifact(explicit: str | None, search_root: Path, marker: str, stage_hint: str, pattern: str = "*") -> Path:
    """The artifact folder a stage reads: ``explicit`` when given, else the newest folder ``search_root/pattern``
    that holds ``marker`` (a file its stage writes last), verified against its checksums. Raises a one-line
    :class:`ConfigError` naming ``stage_hint`` (the command that makes the artifact, and the option that points at
    one) when there is none.
    """
    if explicit:
        folder = Path(explicit).expanduser()
        if not (folder / marker).is_file():
            raise ConfigError(f"{folder} holds no {marker}: not a finished artifact ({stage_hint})")
    else:
        found = sorted(search_root.glob(f"{pattern}/{marker}"), key=lambda path: path.stat().st_mtime)
        if not found:
            raise ConfigError(f"no finished artifact {search_root / pattern} ({stage_hint})")
        folder = found[-1].parent
    verify(folder)
    return folder


def stage_root(cfg: DictConfig, stage: str, *parts: str) -> Path:
    """``<paths.artifact_dir>/<stage>/<dataset>/<task>/<parts...>`` (absolute): where ``stage`` keeps the artifacts of
    this config's cohort and task (e.g. ``parts`` = the backbone's name)."""
    root = Path(cfg.paths.artifact_dir).expanduser().resolve()
    return root.joinpath(stage, cfg.dataset.name, cfg.task.name, *parts)


def report(cfg: DictConfig, metrics: dict, summary: str) -> None:
    """Copy a stage's metrics into the run directory (``paths.output_dir``, where ``eagrl-aggregate`` looks) and
    print its one-line summary."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / METRICS, metrics)
    print(summary, flush=True)


class StageArtifact:
    """One run's artifact folder and its life cycle: a sealed one is only verified and reported; otherwise it is
    created, resumed from ``checkpoints/last.ckpt`` when a killed run left one, and sealed when the stage ends.

        artifact = StageArtifact.of(cfg, "sft", cfg.backbone.name, name=f"{cfg.sft.mode}-{{hash}}")
        if (metrics := artifact.finished("adapter already trained")) is not None:
            return metrics
        artifact.create()
        resume = artifact.resume_from()  # a checkpoint path or None
        ...
        artifact.seal(metrics)
    """

    def __init__(self, folder: Path, overwrite: bool = False):
        #: the artifact folder (absolute)
        self.folder = folder
        #: redo the stage: a sealed artifact is not reused, old checkpoints are deleted
        self.overwrite = overwrite

    @classmethod
    def of(
        cls,
        cfg: DictConfig,
        stage: str,
        *parts: str,
        name: str = "{hash}",
        exclude: tuple[str, ...] = (),
        inputs: Mapping[str, str] | None = None,
    ) -> StageArtifact:
        """The artifact of ``cfg`` for ``stage``: ``stage_root(cfg, stage, *parts) / name``, where ``{hash}`` in
        ``name`` is :func:`config_hash` of ``cfg`` without ``exclude`` and with ``inputs``."""
        digest = config_hash(cfg, exclude=exclude, inputs=inputs)
        return cls(stage_root(cfg, stage, *parts) / name.format(hash=digest), bool(cfg.get("overwrite", False)))

    @property
    def checkpoints(self) -> Path:
        """The folder of the stage's training checkpoints (left out of the checksums)."""
        return self.folder / UNSEALED[0]

    def finished(self, reused: str) -> dict | None:
        """The metrics of the sealed artifact, verified against its checksums and logged as ``reused`` (e.g.
        ``"expert already trained"``); None when it is unfinished or ``overwrite`` asks to redo it."""
        metrics = finished_metrics(self.folder, self.overwrite)
        if metrics is not None:
            log.info("%s: %s (overwrite=true redoes it)", reused, self.folder)
        return metrics

    def create(self) -> Path:
        """Create the folder (and its parents); return it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder

    def resume_from(self) -> Path | None:
        """``checkpoints/last.ckpt`` when a killed run left a loadable one (logged), else None; with ``overwrite``
        the old checkpoints are deleted first. A corrupt checkpoint raises :class:`ArtifactError`."""
        if self.overwrite:
            shutil.rmtree(self.checkpoints, ignore_errors=True)
        resume = resumable(self.checkpoints / "last.ckpt")
        if resume:
            log.info("resuming from %s", resume)
        return resume

    def seal(self, metrics: dict) -> None:
        """Finish the artifact: checksums of its files, then ``metrics`` as its marker (see :func:`seal`)."""
        seal(self.folder, metrics)
