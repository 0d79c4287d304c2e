"""Deterministic artifact folders: a stage's outputs live at a path derived from the config that made them,
so a rerun finds them (skip when complete, resume from the last checkpoint when not)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

#: config keys (dotted) that do not change a stage's result: where files go, how it is logged or launched
VOLATILE_KEYS = (
    "paths", "logger", "hydra", "num_threads", "overwrite", "show_prompt",
    "trainer.default_root_dir", "datamodule.raw_source", "datamodule.data_dir", "datamodule.num_workers",
    "generation.batch_size",
)  # fmt: skip


def config_hash(cfg: DictConfig, length: int = 8) -> str:
    """Short sha256 of the resolved config without :data:`VOLATILE_KEYS`."""
    content = OmegaConf.to_container(cfg, resolve=True)
    for key in VOLATILE_KEYS:
        *parents, leaf = key.split(".")
        node = content
        for parent in parents:
            node = node.get(parent) or {}
        node.pop(leaf, None)
    payload = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def write_json(path: Path, content: dict) -> None:
    """Write JSON atomically (a killed run never leaves a half-written file)."""
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(json.dumps(content, indent=1, default=str))
    staging.replace(path)
