"""Schemas of every config group: each entry point checks the groups it composed against them at start-up, so a
misspelt key in a YAML file (an experiment, a new dataset) or a value of the wrong type fails in one line naming
``group.key`` before any work. The stage blocks with their own dataclasses (``rl``, ``mcts``, ``reward``) are
checked against those; ``trainer`` and ``logger`` are Lightning's and are checked when they are built."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from eagrl.utils.config import check_keys


@dataclass
class DatasetSchema:
    """``conf/dataset/*.yaml``: where a cohort comes from and how it is cut (see tjh.yaml for every field)."""

    name: str
    loader: dict[str, Any]
    raw_files: dict[str, Any] | None
    link_raw: bool
    features_file: str
    labels: list[str]
    time_unit: str
    time_description: str
    context: str
    drop_empty_visits: bool
    min_visits: int
    # the split protocol (seed, test_size, ...), or the string ``none`` (an external cohort: every patient is test)
    split: Any
    salient_top_k: int
    outliers: str | None = None
    meds_dir: str | None = None
    cohort_dir: str | None = None
    #: the features a generated outcome depends on (synthetic.yaml)
    planted: list[str] | None = None


@dataclass
class TaskSchema:
    """``conf/task/*.yaml``: the label and the question asked about it."""

    name: str
    question: str


@dataclass
class PromptSchema:
    """``conf/prompt/*.yaml``: the prompt style and its token budget."""

    system: str
    style: str
    instructions: str
    max_visits: int | None = None
    features: list[str] | None = None
    layout: str = "series"
    visit_times: str = "all"
    flags: bool = False
    abnormal_summary: bool = False
    significant_digits: int = 4
    missing_token: str = "NaN"
    omit_unobserved: bool = False
    shuffle_fraction: float = 0.0
    shuffle_seed: int = 0


@dataclass
class BackboneSchema:
    """``conf/backbone/*.yaml``: the LLM, its loader, dtype, attention kernel and LoRA."""

    name: str
    loader: dict[str, Any]
    dtype: str
    attn_implementation: str
    lora: dict[str, Any]


@dataclass
class ExpertSchema:
    """``conf/expert/*.yaml``: an expert EHR model (``params`` are its constructor's, checked when it is built)."""

    name: str
    lr: float
    weight_decay: float
    importance: str
    ig_steps: int
    top_k: int
    params: dict[str, Any]


@dataclass
class SalientSchema:
    """``conf/salient/*.yaml``: which expert's importance guides the LLM."""

    expert: str
    seed: int
    dir: str | None
    top_k: int


@dataclass
class SFTSchema:
    """``conf/sft/*.yaml``: trajectory, label-only or expert-label SFT."""

    mode: str
    lr: float
    weight_decay: float
    epochs: int
    batch_size: int
    accumulate_grad_batches: int
    gradient_checkpointing: bool
    gradient_clip_val: float
    val_score: str | None
    val_patients: int | None
    val_max_new_tokens: int
    val_batch_size: int
    val_fraction: float
    on_nonfinite: str
    max_length: int | None = None
    frozen_cache_gb: float = 0.0
    completion: str | None = None
    label_answers: list[str] | None = None


@dataclass
class GenerationSchema:
    """The ``generation`` block of evaluate / mcts (each sets the fields it uses)."""

    batch_size: int = 16
    max_new_tokens: int = 192
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop_strings: list[str] = field(default_factory=list)
    guided: bool = False
    guided_features: int = 5


@dataclass
class TrainSchema:
    """The ``train`` block of eagrl-expert."""

    monitor: str
    patience: int
    on_nonfinite: str


@dataclass
class EvaluationSchema:
    """Bootstrap resamples and their seed."""

    resamples: int
    seed: int


@dataclass
class RobustnessSchema:
    """Feature-column shuffling of a tensor expert's test inputs (Figure 3)."""

    shuffle_fraction: float
    shuffle_seed: int


@dataclass
class ParsingSchema:
    """Answer parsing of eagrl-evaluate."""

    fallback_probability: float


@dataclass
class ScoreSchema:
    """How eagrl-evaluate reads ŷ from the policy (eagrl/policy/scoring.py)."""

    method: str
    samples: int
    temperature: float


def _stage_schemas() -> dict[str, tuple[type, tuple[str, ...]]]:
    """The stage blocks' own dataclasses (imported lazily: they pull in torch): path -> (schema, ignored keys)."""
    from eagrl.mcts.search import SearchConfig
    from eagrl.mcts.selection import SelectionConfig
    from eagrl.rewards import RewardConfig
    from eagrl.rl.module import RLConfig

    return {
        "rl": (RLConfig, ()),
        "reward": (RewardConfig, ()),
        "mcts": (SearchConfig, ("selection",)),
        "mcts.selection": (SelectionConfig, ()),
    }


#: config group -> schema
SCHEMAS: dict[str, type] = {
    "dataset": DatasetSchema,
    "task": TaskSchema,
    "prompt": PromptSchema,
    "backbone": BackboneSchema,
    "expert": ExpertSchema,
    "salient": SalientSchema,
    "sft": SFTSchema,
    "generation": GenerationSchema,
    "train": TrainSchema,
    "evaluation": EvaluationSchema,
    "robustness": RobustnessSchema,
    "parsing": ParsingSchema,
    "score": ScoreSchema,
}


def check_groups(cfg: DictConfig) -> None:
    """Check every group ``cfg`` holds against its schema; raises a one-line ConfigError naming ``group.key``."""
    schemas = {path: (schema, ()) for path, schema in SCHEMAS.items()}
    if any(path.split(".")[0] in cfg for path in ("rl", "reward", "mcts")):
        schemas |= _stage_schemas()
    for path, (schema, ignore) in schemas.items():
        block = cfg
        for part in path.split("."):
            block = block.get(part) if isinstance(block, DictConfig) else None
        if isinstance(block, DictConfig):
            check_keys(schema, block, path, ignore=ignore)
