"""Where the evaluation stage keeps its answers: an adapter's weights are part of the artifact's identity."""

from __future__ import annotations

import re

import pytest

from eagrl.errors import DataError
from eagrl.policy.backbone import ADAPTER_WEIGHTS
from eagrl.stages.evaluate import artifact
from tests.conftest import compose_config


def test_an_adapter_retrained_in_place_gets_new_answers(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / ADAPTER_WEIGHTS).write_bytes(b"weights of the first training")
    cfg = compose_config("evaluate", [f"adapter={adapter}", f"paths.artifact_dir={tmp_path / 'artifacts'}"], tmp_path)
    first = artifact(cfg).folder
    assert artifact(cfg).folder == first  # same weights, same folder: a rerun reuses the answers
    (adapter / ADAPTER_WEIGHTS).write_bytes(b"weights of the second training")
    assert artifact(cfg).folder != first
    (adapter / ADAPTER_WEIGHTS).unlink()
    with pytest.raises(DataError, match=re.escape(f"holds no {ADAPTER_WEIGHTS}")):
        artifact(cfg)
