"""Every shipped config option passes its group's schema; a misspelt key or a wrong type in any group fails in one
line naming ``group.key``."""

from __future__ import annotations

from pathlib import Path

import pytest

from eagrl.errors import ConfigError
from eagrl.stages.schemas import check_groups
from tests.conftest import compose_config

CONF = Path(__file__).resolve().parents[2] / "conf"
#: entry config -> groups it composes whose every option is checked
ENTRIES = {
    "data": ["dataset", "task", "prompt"],
    "expert": ["dataset", "expert"],
    "evaluate": ["backbone", "prompt"],
    "mcts": ["mcts", "reward", "salient"],
    "sft": ["sft"],
    "rl": ["rl", "reward", "ablation"],
    "pipeline": ["experiment"],
}


def _options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF / group).glob("*.yaml") if not path.stem.startswith("_"))


@pytest.mark.parametrize(
    ("entry", "override"),
    [
        (entry, f"{group}={option}")
        for entry, groups in ENTRIES.items()
        for group in groups
        for option in _options(group)
    ],
)
def test_every_shipped_option_passes(entry, override, tmp_path):
    extra = ["task=readmission"] if override in ("dataset=mimic4", "dataset=mimic4_demo") else []
    check_groups(compose_config(entry, [override, *extra], tmp_path))


@pytest.mark.parametrize(
    ("entry", "override", "message"),
    [
        ("sft", "+sft.epoch=3", "sft.epoch"),
        ("sft", "sft.epochs=three", "sft.epochs"),
        ("evaluate", "+prompt.max_visit=2", "prompt.max_visit"),
        ("expert", "+dataset.min_visit=2", "dataset.min_visit"),
        ("rl", "+rl.step=3", "rl.step"),
        ("mcts", "+mcts.selection.topk=3", "mcts.selection.topk"),
        ("evaluate", "generation.max_new_tokens=many", "generation.max_new_tokens"),
    ],
)
def test_a_misspelt_key_or_wrong_type_names_its_path(entry, override, message, tmp_path):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        check_groups(compose_config(entry, [override], tmp_path))
