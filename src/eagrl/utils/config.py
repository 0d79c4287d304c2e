"""Config blocks as typed dataclasses: an unknown key or a value of the wrong type fails at start-up with its path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from eagrl.errors import ConfigError

T = TypeVar("T")


def typed(schema: type[T], cfg: Mapping | DictConfig, path: str, ignore: tuple[str, ...] = (), **extra) -> T:
    """``schema`` (a dataclass) built from the config block at ``path`` (its keys but ``ignore``) and ``extra``.

    Raises a one-line :class:`ConfigError` naming ``path.key`` for an unknown key or a value of the wrong type.
    """
    return _checked(schema, cfg, path, ignore, extra, build=True)


def check_keys(schema: type, cfg: Mapping | DictConfig, path: str, ignore: tuple[str, ...] = ()) -> None:
    """Check the block at ``path`` against ``schema`` without building it: unknown keys and wrong types fail (one
    line naming ``path.key``); missing keys do not (an entry may hold part of a block it does not use)."""
    _checked(schema, cfg, path, ignore, {}, build=False)


def _checked(schema, cfg, path: str, ignore: tuple[str, ...], extra: dict, build: bool):
    values = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    values = {key: value for key, value in values.items() if key not in ignore} | extra
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), values)
        return OmegaConf.to_object(merged) if build else None
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or getattr(error, "key", None) or "?"
        message = str(error).splitlines()[0]
        raise ConfigError(f"{path}.{key}: {message}") from None


def resolved_container(cfg: DictConfig) -> dict:
    """``cfg`` as plain containers with every interpolation resolved; a value that cannot be resolved here (e.g.
    ``${hydra:...}`` outside a Hydra run) is kept as its interpolation string instead of failing."""

    def resolve(node):
        if isinstance(node, DictConfig):
            return {key: resolve_item(node, key) for key in node}
        if isinstance(node, ListConfig):
            return [resolve_item(node, index) for index in range(len(node))]
        return node

    def resolve_item(node, key):
        try:
            return resolve(node[key])
        except OmegaConfBaseException:
            return node._get_node(key)._value()

    return resolve(cfg)
