"""One source of defaults: every default of a config group's dataclass is the value the shipped entry config composes
(conf/ is the source; a dataclass default that drifts from it fails here), and the group holds no key the dataclass
lacks."""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from eagrl.mcts.search import SearchConfig
from eagrl.mcts.selection import SelectionConfig
from eagrl.rewards import RewardConfig
from eagrl.rl.module import RLConfig
from tests.conftest import compose_config

#: dataclass -> (entry config, the block's path in it, its keys the dataclass does not hold)
GROUPS = {
    RLConfig: ("rl", "rl", ()),
    RewardConfig: ("rl", "reward", ()),
    SearchConfig: ("mcts", "mcts", ("selection",)),
    SelectionConfig: ("mcts", "mcts.selection", ()),
}
#: fields a stage fills from elsewhere in its config, never from the block
INJECTED = ("seed",)


@pytest.mark.parametrize("schema", GROUPS, ids=lambda schema: schema.__name__)
def test_dataclass_defaults_are_the_shipped_configs(schema, tmp_path):
    entry, path, extra = GROUPS[schema]
    block = OmegaConf.to_container(OmegaConf.select(compose_config(entry, [], tmp_path), path), resolve=True)
    fields = {field.name: field for field in dataclasses.fields(schema)}
    assert set(block) - set(fields) <= set(extra), f"{path} holds keys {schema.__name__} lacks"
    drifted = {}
    for name, field in fields.items():
        if name in INJECTED:
            continue
        assert name in block, f"{path}.{name} is missing from the shipped {entry} config"
        default = field.default if field.default_factory is dataclasses.MISSING else field.default_factory()
        if (
            default is not dataclasses.MISSING
            and (list(default) if isinstance(default, tuple) else default) != block[name]
        ):
            drifted[name] = (default, block[name])
    assert not drifted, f"{schema.__name__} defaults differ from conf ({path}): (dataclass, yaml) {drifted}"
