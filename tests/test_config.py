"""Every option of every config group composes with the entry config, and every field is commented."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from eagrl.cli.entry import CONFIG_DIR
from tests.conftest import compose_config, run_cli

GROUPS = {
    group.name: sorted(path.stem for path in group.glob("*.yaml") if not path.stem.startswith("_"))
    for group in Path(CONFIG_DIR).iterdir()
    if group.is_dir() and group.name != "hydra"
}
IN_DATA_DEFAULTS = {"paths", "dataset", "task", "prompt", "datamodule", "logger", "experiment", "debug"}


ENTRIES = sorted(path.stem for path in Path(CONFIG_DIR).glob("*.yaml"))


def _groups_of(config_name: str) -> set[str]:
    """Config groups an entry config (or an experiment's overrides) names in its defaults list."""
    defaults = OmegaConf.load(Path(CONFIG_DIR) / f"{config_name}.yaml").get("defaults", [])
    names = set()
    for entry in defaults:
        if isinstance(entry, str):  # another config of the same group: its groups count too
            if entry != "_self_":
                names |= _groups_of(f"{Path(config_name).parent}/{entry}")
            continue
        for key in entry:
            names.add(key.removeprefix("override ").lstrip("/"))
    return names


@pytest.mark.parametrize(
    ("group", "option"),
    [(group, option) for group, options in GROUPS.items() if group != "experiment" for option in options],
)
def test_every_option_composes(group, option, tmp_path):
    prefix = "" if group in IN_DATA_DEFAULTS else "+"
    cfg = compose_config("data", [f"{prefix}{group}={option}"], tmp_path)
    OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize(
    ("experiment", "entry"),
    [
        (experiment, entry)
        for experiment in GROUPS["experiment"]
        for entry in ENTRIES
        if _groups_of(f"experiment/{experiment}") <= _groups_of(entry)
    ],
)
def test_every_experiment_composes_with_every_stage_that_has_its_groups(experiment, entry, tmp_path):
    cfg = compose_config(entry, [f"experiment={experiment}"], tmp_path)
    OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize(
    ("experiment", "entry"),
    [
        (experiment, entry)
        for experiment in GROUPS["experiment"]
        for entry in ENTRIES
        if "backbone" in _groups_of(entry) and entry != "pipeline"
    ],
)
def test_every_experiment_reaches_every_policy_stage(experiment, entry, tmp_path):
    """The pipeline composes each stage without the experiment when they do not compose (an experiment that
    overrides a group the stage lacks): a stage that runs the policy must never lose the experiment that way."""
    cfg = compose_config(entry, [f"experiment={experiment}"], tmp_path)
    assert cfg.backbone.name == compose_config("pipeline", [f"experiment={experiment}"], tmp_path).backbone.name


@pytest.mark.parametrize("entry", ENTRIES)
def test_every_entry_config_composes(entry, tmp_path):
    cfg = compose_config(entry, [], tmp_path)
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.stage == entry


def test_every_yaml_field_has_a_comment_above_it():
    """DESIGN.md: a comment above every config field (lists' items and nested blocks' parents included)."""
    missing = []
    for path in Path(CONFIG_DIR).rglob("*.yaml"):
        if path.parent.name == "hydra":
            continue
        lines = path.read_text().splitlines()
        block_indent = None  # inside a `key: |` block scalar: its text is not a field
        for number, line in enumerate(lines):
            stripped = line.strip()
            indent = len(line) - len(line.lstrip())
            if block_indent is not None and (not stripped or indent > block_indent):
                continue
            block_indent = None
            if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
                continue
            key, _, value = stripped.partition(":")
            if value.strip() in ("|", ">"):
                block_indent = indent
            if key in ("defaults", "_target_", "_recursive_", "_partial_"):
                continue
            previous = lines[number - 1].strip() if number else ""
            if not previous.startswith("#"):
                missing.append(f"{path.relative_to(CONFIG_DIR)}:{number + 1} {key}")
    assert not missing, missing


#: the README's "Scaling up" commands, as entry config + overrides
SCALING = [
    ("expert", ["trainer=ddp", "trainer.accelerator=cpu", "hydra/launcher=local"]),
    ("expert", ["trainer=gpu", "hydra/launcher=slurm", "hydra.launcher.partition=gpu"]),
    ("sft", ["backbone=qwen2_5_7b_instruct", "trainer=fsdp", "trainer.devices=8", "hydra/launcher=slurm"]),
    ("rl", ["backbone=qwen2_5_7b_instruct", "trainer=gpu", "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=1"]),
    ("mcts", ["backbone=llama3_1_8b_instruct", "mcts=paper", "hydra/launcher=slurm"]),
    ("evaluate", ["backbone=qwen2_5_3b_instruct", "hydra/launcher=slurm"]),
    ("pipeline", ["backbone=qwen2_5_7b_instruct", "mcts=paper", "trainer=gpu", "hydra/launcher=slurm"]),
]


@pytest.mark.parametrize(("entry", "overrides"), SCALING)
def test_scaling_configs_compose(entry, overrides, tmp_path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = hydra_compose(entry, overrides=[f"paths.output_dir={tmp_path}", *overrides], return_hydra_config=True)
    OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    strategies = [o.split("=")[1] for o in overrides if o in ("trainer=ddp", "trainer=fsdp")]
    if strategies:
        assert cfg.trainer.strategy == strategies[0]
    if "hydra/launcher=slurm" in overrides:
        assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")


def test_cfg_job_prints_a_scaled_config(tmp_path):
    result = run_cli(
        "rl", ["backbone=qwen2_5_7b_instruct", "trainer=fsdp", "hydra/launcher=slurm", "--cfg", "job"], tmp_path
    )
    assert result.returncode == 0, result.stderr[-1000:]
    assert "strategy: fsdp" in result.stdout and "Qwen/Qwen2.5-7B-Instruct" in result.stdout
