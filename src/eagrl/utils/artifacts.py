"""Deterministic artifact folders: a stage's outputs live at a path derived from the config that made them,
so a rerun finds them (skip when complete, resume from the last checkpoint when not)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from eagrl.errors import ConfigError

#: config keys (dotted) that do not change a stage's result: where files go, how it is logged or launched
VOLATILE_KEYS = (
    "paths", "logger", "hydra", "num_threads", "overwrite", "show_prompt",
    "trainer.default_root_dir", "datamodule.raw_source", "datamodule.data_dir", "datamodule.num_workers",
    "generation.batch_size",
)  # fmt: skip


def config_hash(
    cfg: DictConfig, length: int = 8, exclude: tuple[str, ...] = (), inputs: Mapping[str, str] | None = None
) -> str:
    """Short sha256 of the resolved config without :data:`VOLATILE_KEYS` and ``exclude``.

    ``inputs`` (name -> content digest of an input artifact) enter the hash too, so a stage that reads another
    stage's output by content is redone when that output changes.
    """
    content = OmegaConf.to_container(cfg, resolve=True)
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


def find_artifact(explicit: str | None, search_root: Path, marker: str, stage_hint: str, pattern: str = "*") -> Path:
    """The artifact folder a stage reads: ``explicit`` when given, else the newest folder ``search_root/pattern``
    that holds ``marker`` (a file its stage writes last). Raises a one-line :class:`ConfigError` naming
    ``stage_hint`` (the command that makes the artifact, and the option that points at one) when there is none.
    """
    if explicit:
        folder = Path(explicit).expanduser()
        if not (folder / marker).is_file():
            raise ConfigError(f"{folder} holds no {marker}: not a finished artifact ({stage_hint})")
        return folder
    found = sorted(search_root.glob(f"{pattern}/{marker}"), key=lambda path: path.stat().st_mtime)
    if not found:
        raise ConfigError(f"no finished artifact {search_root / pattern} ({stage_hint})")
    return found[-1].parent
