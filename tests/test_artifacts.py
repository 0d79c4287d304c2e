"""Artifact folders depend on what changes a result, not on where files go; a finished artifact or a checkpoint
that was truncated or changed afterwards is refused with a line naming the file, never reused."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from eagrl.errors import ArtifactError
from eagrl.utils.artifacts import (
    _path_roots,
    _portable,
    config_hash,
    find_artifact,
    finished_metrics,
    resumable,
    seal,
)
from tests.conftest import compose_config


def test_config_hash_ignores_paths_and_logging_but_not_settings(tmp_path):
    base = config_hash(compose_config("expert", [], tmp_path))
    elsewhere = compose_config("expert", ["logger=wandb", "num_threads=1", "datamodule.num_workers=2"], tmp_path / "x")
    assert config_hash(elsewhere) == base
    assert config_hash(compose_config("expert", ["seed=1"], tmp_path)) != base
    assert config_hash(compose_config("expert", ["expert.params.hidden_dim=8"], tmp_path)) != base


def test_config_hash_is_the_same_wherever_the_project_lives(tmp_path, monkeypatch):
    """A path into the project's folders enters the hash relative to its root: the same adapter given from two
    project roots, or absolute and ./-relative from the root, gives one hash; a different adapter another."""

    def hashed(root, adapter):
        paths = [f"paths.root_dir={root}", f"paths.artifact_dir={root}/artifacts", f"paths.model_dir={root}/models"]
        return config_hash(compose_config("rl", [*paths, f"init.adapter={adapter}"], tmp_path))

    one, two = tmp_path / "one", tmp_path / "two"
    base = hashed(one, f"{one}/artifacts/sft/smollm2_135m/label_only-1")
    assert hashed(two, f"{two}/artifacts/sft/smollm2_135m/label_only-1") == base
    (one / "artifacts" / "sft" / "smollm2_135m" / "label_only-1").mkdir(parents=True)
    monkeypatch.chdir(one)
    assert hashed(".", "./artifacts/sft/smollm2_135m/label_only-1") == base
    assert hashed(".", "artifacts/sft/smollm2_135m/label_only-1") == base  # plain relative, as the docs write it
    assert hashed(one, f"{one}/artifacts/sft/smollm2_135m/label_only-2") != base


def test_only_path_strings_are_written_against_a_root(tmp_path, monkeypatch):
    """Units, URLs and metric names stay as written; a path under nested roots is written against the deepest."""
    monkeypatch.chdir(tmp_path)
    roots = _path_roots(OmegaConf.create({"paths": {"artifact_dir": str(tmp_path), "model_dir": f"{tmp_path}/models"}}))
    for text in ("U/L", "10^9/L", "https://example.org/a/b", "val/auprc", "</Final answer>", "/no\x00path"):
        assert _portable(text, roots) == text
    assert _portable(f"{tmp_path}/models/smollm2", roots) == "${paths.model_dir}/smollm2"
    assert _portable(f"{tmp_path}/sft/x", roots) == "${paths.artifact_dir}/sft/x"


def _sealed(tmp_path):
    folder = tmp_path / "artifact"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "adapter.bin").write_bytes(b"weights" * 100)
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"rewritten while training")
    seal(folder, {"auroc": 0.9})
    return folder


def test_a_sealed_artifact_is_reused_until_a_file_is_truncated(tmp_path):
    folder = _sealed(tmp_path)
    assert json.loads((folder / "checksums.json").read_text()).keys() == {"adapter.bin"}
    assert finished_metrics(folder) == {"auroc": 0.9}
    assert finished_metrics(folder, overwrite=True) is None
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"")  # checkpoints are not sealed
    assert find_artifact(None, tmp_path, "metrics.json", "hint") == folder
    (folder / "adapter.bin").write_bytes(b"weights" * 50)
    with pytest.raises(ArtifactError, match=r"adapter\.bin: truncated or changed"):
        finished_metrics(folder)
    with pytest.raises(ArtifactError, match=r"adapter\.bin"):
        find_artifact(str(folder), tmp_path, "metrics.json", "hint")
    (folder / "adapter.bin").unlink()
    with pytest.raises(ArtifactError, match=r"adapter\.bin: missing"):
        finished_metrics(folder)


def test_an_unreadable_marker_is_reported(tmp_path):
    folder = _sealed(tmp_path)
    (folder / "metrics.json").write_text('{"auroc": 0.')
    with pytest.raises(ArtifactError, match=r"metrics\.json: unreadable"):
        finished_metrics(folder)


def test_a_truncated_checkpoint_is_refused(tmp_path):
    checkpoint = tmp_path / "last.ckpt"
    assert resumable(checkpoint) is None
    torch.save({"state_dict": {"w": torch.ones(1000)}, "global_step": 3}, checkpoint)
    assert resumable(checkpoint) == checkpoint
    checkpoint.write_bytes(checkpoint.read_bytes()[:-200])
    with pytest.raises(ArtifactError, match=r"last\.ckpt: unreadable checkpoint"):
        resumable(checkpoint)


def test_config_hash_ignores_the_pipelines_own_keys(tmp_path):
    """An experiment that sets the pipeline's stages or baselines puts them in every stage's config: the GRPO arm of
    experiments/canary.sh (baselines=[]) must still reuse the EAG-RL arm's Stage-1 adapter."""
    cfg = compose_config("sft", ["experiment=canary_expert_label"], tmp_path)
    other = compose_config("sft", ["experiment=canary_expert_label", "baselines=[]", "stages=[sft]"], tmp_path)
    assert other.baselines == [] and config_hash(other) == config_hash(cfg)
