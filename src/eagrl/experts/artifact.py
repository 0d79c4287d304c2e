"""What an expert artifact holds so that the model can be applied to another cohort without retraining.

Beside ``checkpoints/best.ckpt``, ``eagrl-expert`` writes ``expert.json`` (the card: expert, training dataset and
task, the ordered feature list and the normalisation statistics of the training split) and ``config.yaml`` (the
resolved run config, without the machine-specific ``paths`` and ``hydra`` blocks). Both are sealed with the
artifact's checksums; reading the card checks it against :class:`ExpertCard`, so a missing key or a value of the
wrong type ends in one line naming it.

    card = load_card(folder)                  # schema-checked
    datamodule = EHRDataModule(..., normalisation=card.normalisation_stats())
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from eagrl.data.datamodule import Normalisation
from eagrl.errors import ArtifactError, ConfigError
from eagrl.utils.artifacts import write_json
from eagrl.utils.config import resolved_container, typed

#: the card's file name inside an expert artifact
CARD = "expert.json"
#: the resolved run config beside it
CONFIG = "config.yaml"
#: the checkpoint external scoring loads (relative to the artifact)
CHECKPOINT = "checkpoints/best.ckpt"
#: bump when the card's fields change meaning
CARD_VERSION = 1


@dataclass
class StatsSchema:
    """Per-feature statistics of one kind of feature (``names`` in model order, one value per name each)."""

    names: list[str]
    mean: list[float]
    std: list[float]
    median: list[float]


@dataclass
class NormalisationSchema:
    """Statistics of the training split: static and dynamic features."""

    static: StatsSchema
    dynamic: StatsSchema


@dataclass
class FeatureListSchema:
    """The model's input features (canonical names), static then dynamic, in input order."""

    static: list[str]
    dynamic: list[str]


@dataclass
class ExpertCard:
    """``expert.json``: enough to apply a trained expert to another cohort.

    Attributes:
        version: :data:`CARD_VERSION` of the writer.
        expert: registered expert name (``concare``, ...).
        dataset: the training cohort's ``dataset.name``; ``task`` the label it predicts.
        features_file: the training cohort's feature metadata (``dataset.features_file``).
        features: the input features; ``normalisation`` the training split's statistics for them.
        importance: importance method; ``ig_steps`` its integration steps; ``top_k`` the size of C_exp.
        checkpoint: the weights, relative to the artifact.
    """

    version: int
    expert: str
    dataset: str
    task: str
    features_file: str
    features: FeatureListSchema
    normalisation: NormalisationSchema
    importance: str
    ig_steps: int
    top_k: int
    checkpoint: str

    def normalisation_stats(self) -> Normalisation:
        """The statistics as the datamodule takes them."""
        return Normalisation.from_json(asdict(self.normalisation))


def write_card(target: Path, cfg: DictConfig, normalisation: Normalisation) -> None:
    """Write ``expert.json`` and ``config.yaml`` of the run ``cfg`` into the artifact folder ``target``."""
    card = {
        "version": CARD_VERSION,
        "expert": cfg.expert.name,
        "dataset": cfg.dataset.name,
        "task": cfg.task.name,
        "features_file": str(cfg.dataset.features_file),
        "features": {"static": normalisation.static_names, "dynamic": normalisation.dynamic_names},
        "normalisation": normalisation.to_json(),
        "importance": cfg.expert.importance,
        "ig_steps": int(cfg.expert.ig_steps),
        "top_k": int(cfg.expert.top_k),
        "checkpoint": CHECKPOINT,
    }
    write_json(target / CARD, card)
    content = resolved_container(cfg)
    for key in ("hydra", "paths"):
        content.pop(key, None)
    (target / CONFIG).write_text(OmegaConf.to_yaml(OmegaConf.create(content)))


def load_card(folder: Path) -> ExpertCard:
    """The schema-checked card of the expert artifact ``folder``; :class:`ArtifactError` (one line) when it is
    missing, unreadable, of another version, or inconsistent."""
    path = folder / CARD
    if not path.is_file():
        raise ArtifactError(
            f"{folder} holds no {CARD}: the expert was trained before artifacts recorded their features and "
            "normalisation statistics; retrain it (the same eagrl-expert command with overwrite=true)"
        )
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ArtifactError(f"{path}: unreadable ({error})") from None
    if not isinstance(content, dict) or content.get("version") != CARD_VERSION:
        found = content.get("version") if isinstance(content, dict) else None
        raise ArtifactError(f"{path}: card version {found!r}, this code reads version {CARD_VERSION}")
    try:
        card = typed(ExpertCard, content, str(path))
    except ConfigError as error:
        raise ArtifactError(f"{error} (a damaged or hand-edited {CARD})") from None
    for kind in ("static", "dynamic"):
        names, stats = getattr(card.features, kind), getattr(card.normalisation, kind)
        lengths = {len(names), len(stats.names), len(stats.mean), len(stats.std), len(stats.median)}
        if stats.names != names or len(lengths) != 1:
            raise ArtifactError(f"{path}: normalisation.{kind} does not match features.{kind}")
    if not (folder / card.checkpoint).is_file():
        raise ArtifactError(f"{folder / card.checkpoint}: missing; the artifact cannot be applied without it")
    return card
