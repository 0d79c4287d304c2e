"""The search stage (``eagrl-mcts``): Stage 1 search — expert-guided MCTS reasoning trajectories for every training
patient.

Artifacts go to ``<paths.artifact_dir>/mcts/<dataset>/<task>/<backbone>/<config hash>/``: ``shards/shard-NNNNN.json``
(the searched patients of one lockstep batch, written atomically: a killed run redoes at most one shard and
never loses or duplicates a patient), then ``paths.parquet`` (every complete answer with its steps and reward
terms), ``selected.parquet`` (the SFT trajectories under ``mcts.selection``) and ``metrics.json``. The hash
covers the config without ``mcts.selection`` plus the expert's importance file, so changing the selection only
reselects, and retraining the expert redoes the search.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig
from tqdm.auto import tqdm

from eagrl.errors import ConfigError, DataError
from eagrl.experts.salient import check_patients, expert_importance, salient_features
from eagrl.rewards import correct_side
from eagrl.stages.runtime import prepared_datamodule, start
from eagrl.utils.artifacts import StageArtifact, file_digest, report, write_json
from eagrl.utils.config import typed

log = logging.getLogger(__name__)

#: config blocks that do not change the search itself
SELECTION_KEYS = ("mcts.selection",)


def artifact(cfg: DictConfig, importance_path: Path) -> StageArtifact:
    """Where this search's shards and trajectories live."""
    inputs = {"expert_importance": file_digest(importance_path)}
    return StageArtifact.of(cfg, "mcts", cfg.backbone.name, exclude=SELECTION_KEYS, inputs=inputs)


def read_shard(path: Path, expected_ids: list[str]) -> dict | None:
    """A finished shard, or None (with a warning) when it is unreadable or holds other patients."""
    try:
        shard = json.loads(path.read_text())
        ids = [patient["patient_id"] for patient in shard["patients"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("%s is unreadable (%s): searching its patients again", path, error)
        return None
    if ids != expected_ids:
        log.warning("%s holds other patients than this search expects: searching them again", path)
        return None
    return shard


def _json_safe(value):
    """NaN -> None, recursively (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def run(cfg: DictConfig) -> dict:
    """Search every pending shard, then write all complete paths, the selection and the metrics."""
    from eagrl.mcts.search import MCTS, SearchConfig, complete_paths
    from eagrl.mcts.selection import SelectionConfig, select_paths
    from eagrl.policy.backbone import load_backbone
    from eagrl.policy.engine import GenerationEngine, PrefixCache
    from eagrl.policy.parsing import FeatureVocabulary
    from eagrl.rewards import RewardConfig

    threads = start(cfg, seed=False)
    if cfg.split != "train":
        raise ConfigError(
            f"split={cfg.split}: the search scores answers with labels and the expert's salient features, so it "
            "runs on the train split only (split=train)"
        )
    search = typed(SearchConfig, cfg.mcts, "mcts", ignore=("selection",), seed=cfg.seed)
    closing = "pqd" if search.final_subquestion is not None else "features_answer"
    if cfg.prompt.style != closing:
        raise ConfigError(
            f"prompt={cfg.prompt.style}: the search writes {closing} answers (mcts.final_subquestion="
            f"{search.final_subquestion!r}); use prompt=pqd, or prompt=features_answer with "
            "mcts.final_subquestion=null mcts.min_depth=0 mcts.max_depth=0"
        )
    selection = typed(SelectionConfig, cfg.mcts.selection, "mcts.selection")
    reward = typed(RewardConfig, cfg.reward, "reward")
    if reward.needs_internal:
        raise ConfigError(
            f"reward.attention={reward.attention}: the search scores declared features (reward.attention=declared "
            "or none); the internal attention reward is a Stage 2 option"
        )

    importance_path, importance = expert_importance(cfg)
    stage = artifact(cfg, importance_path)
    target = stage.folder
    shard_dir = target / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    if cfg.overwrite:
        for stale in shard_dir.glob("shard-*.json"):
            stale.unlink()

    datamodule = prepared_datamodule(cfg)
    records, prompts = datamodule.patients(cfg.split, cfg.task, cfg.prompt, cfg.max_patients)
    if not records:
        raise ConfigError(f"the {cfg.split} split of {cfg.dataset.name} holds no patient to search")
    check_patients(importance, [record.patient_id for record in records], importance_path)
    rankings = importance["ranking"]

    size = cfg.patients_per_shard
    chunks = [list(range(start, min(start + size, len(records)))) for start in range(0, len(records), size)]
    shards: dict[int, dict] = {}
    for number, chunk in enumerate(chunks):
        path = shard_dir / f"shard-{number:05d}.json"
        if path.is_file() and (shard := read_shard(path, [records[i].patient_id for i in chunk])) is not None:
            shards[number] = shard
    pending = [number for number in range(len(chunks)) if number not in shards]
    if shards:
        log.info("resuming: %d of %d shards already searched (%s)", len(shards), len(chunks), shard_dir)

    if pending:
        backbone = load_backbone(cfg.backbone)
        engine = GenerationEngine(
            backbone.model,
            backbone.tokenizer,
            batch_size=cfg.generation.batch_size,
            progress=False,
            prefix_cache=PrefixCache(max_entries=size),
            share_prefix=False,  # the cache holds the patients' records
        )
        vocabulary = FeatureVocabulary(datamodule.features)
        done = sum(len(chunks[number]) for number in shards)
        bar = tqdm(total=len(records), initial=done, desc="mcts", unit="patient")
        for number in pending:
            started = time.perf_counter()
            searcher = MCTS(engine, vocabulary, search, reward)
            patients = [
                searcher.patient(
                    records[i].patient_id,
                    records[i].label,
                    prompts[i].messages(),
                    salient_features(rankings[records[i].patient_id], prompts[i].observed_features, cfg.salient.top_k),
                    prompts[i].observed_features,
                )
                for i in chunks[number]
            ]
            searcher.run(patients)
            shard = {
                "shard": number,
                "seconds": time.perf_counter() - started,
                "engine": asdict(searcher.stats),
                "patients": [
                    {
                        "patient_id": patient.patient_id,
                        "label": patient.label,
                        "system": patient.messages[0]["content"],
                        "user": patient.messages[1]["content"],
                        "expert_features": list(patient.expert_features),
                        "tree": patient.tree.stats(),
                        "paths": complete_paths(patient),
                    }
                    for patient in patients
                ],
            }
            write_json(shard_dir / f"shard-{number:05d}.json", _json_safe(shard))
            shards[number] = shard
            bar.update(len(patients))
            bar.set_postfix(tok_s=f"{searcher.stats.tokens_per_second:.1f}")
        bar.close()

    paths = pd.DataFrame(
        [
            {
                "patient_id": patient["patient_id"],
                "label": patient["label"],
                "system": patient["system"],
                "user": patient["user"],
                "expert_features": patient["expert_features"],
                **path,
            }
            for number in sorted(shards)
            for patient in shards[number]["patients"]
            for path in patient["paths"]
        ]
    )
    if paths.empty:
        raise DataError(f"the search produced no complete answer ({shard_dir}); raise mcts.rollouts")
    paths["probability"] = paths["probability"].astype(float)
    paths["r_cls"] = paths["r_cls"].astype(float)
    paths["r_att"] = paths["r_att"].astype(float)
    paths.to_parquet(target / "paths.parquet", index=False)
    selected = select_paths(paths, selection)
    selected.to_parquet(target / "selected.parquet", index=False)
    metrics = summarise(cfg, shards, paths, selected, threads, target, importance_path)
    stage.seal(metrics)
    _finish(metrics, cfg)
    return metrics


def summarise(cfg, shards: dict[int, dict], paths, selected, threads: int, target: Path, importance_path) -> dict:
    """metrics.json of a search: sizes, reward terms, the selection and the cost."""
    from eagrl.policy.parsing import READ_STATUSES

    patients = [patient for shard in shards.values() for patient in shard["patients"]]
    engines = [shard["engine"] for shard in shards.values()]
    seconds = sum(shard["seconds"] for shard in shards.values())
    generated = sum(engine["generated_tokens"] for engine in engines)
    parsed = paths["status"].isin(READ_STATUSES)
    correct = correct_side(paths["label"], paths["probability"])
    return {
        "dataset": cfg.dataset.name,
        "task": cfg.task.name,
        "backbone": cfg.backbone.name,
        "split": cfg.split,
        "seed": cfg.seed,
        "patients": len(patients),
        "patients_with_a_complete_answer": int(paths["patient_id"].nunique()),
        "complete_answers": len(paths),
        "parse_rate": float(parsed.mean()),
        "correct_side_rate": float(correct.mean()),
        "mean_r_total": float(paths["r_total"].mean()),
        "mean_r_cls": float(paths["r_cls"].mean()),
        "mean_r_att": float(paths["r_att"].mean()),
        "tree": {key: float(pd.Series([p["tree"][key] for p in patients]).mean()) for key in patients[0]["tree"]},
        "selected": {
            "trajectories": len(selected),
            "patients": int(selected["patient_id"].nunique()),
            "by_label": {str(k): int(v) for k, v in selected["label"].value_counts().sort_index().items()},
            "mean_r_total": float(selected["r_total"].mean()) if len(selected) else None,
            "mean_r_att": float(selected["r_att"].mean()) if len(selected) else None,
        },
        "cost": {
            "search_seconds": seconds,
            "generated_tokens": generated,
            "generated_tokens_per_second": generated / seconds if seconds else None,
            "prompt_tokens": sum(engine["prompt_tokens"] for engine in engines),
            "reused_prompt_tokens": sum(engine["reused_prompt_tokens"] for engine in engines),
            "threads": threads,
        },
        "expert_importance": str(importance_path),
        "artifact_dir": str(target),
    }


def _finish(metrics: dict, cfg: DictConfig) -> None:
    """Report the run: its metrics into the run directory and one summary line."""
    selected = metrics["selected"]
    if len(selected["by_label"]) < 2:
        log.warning(
            "the selected trajectories hold one outcome only %s, so SFT never sees an answer for the other (class "
            "balancing cannot fill an empty class): search more patients (max_patients) or relax mcts.selection "
            "(correct_side, require_closed)",
            selected["by_label"],
        )
    report(
        cfg,
        metrics,
        f"mcts {metrics['backbone']} on {metrics['dataset']}/{metrics['task']}: {metrics['patients']} patients, "
        f"{metrics['complete_answers']} complete answers (parsed {100 * metrics['parse_rate']:.0f} %, correct side "
        f"{100 * metrics['correct_side_rate']:.0f} %, mean R {metrics['mean_r_total']:.3f}); selected "
        f"{selected['trajectories']} trajectories of {selected['patients']} patients {selected['by_label']} "
        f"({metrics['cost']['search_seconds']:.0f} s) -> {metrics['artifact_dir']}",
    )
