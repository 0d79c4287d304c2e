"""Artifact folders depend on what changes a result, not on where files go."""

from __future__ import annotations

from eagrl.utils.artifacts import config_hash
from tests.conftest import compose_config


def test_config_hash_ignores_paths_and_logging_but_not_settings(tmp_path):
    base = config_hash(compose_config("expert", [], tmp_path))
    elsewhere = compose_config("expert", ["logger=wandb", "num_threads=1", "datamodule.num_workers=2"], tmp_path / "x")
    assert config_hash(elsewhere) == base
    assert config_hash(compose_config("expert", ["seed=1"], tmp_path)) != base
    assert config_hash(compose_config("expert", ["expert.params.hidden_dim=8"], tmp_path)) != base
