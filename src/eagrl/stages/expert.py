"""The expert stage (``eagrl-expert``): train an expert EHR model, test it with bootstrap, export per-patient
salient features.

Artifacts go to ``<paths.artifact_dir>/expert/<dataset>/<task>/<expert>/seed<seed>-<config hash>/``:
``checkpoints/{best,last}.ckpt``, ``importance.parquet`` (per patient: split, label, probability, importance
over the S + F features, ranking, top-k set C_exp), ``expert.json`` (features and the training split's
normalisation statistics, see :mod:`eagrl.experts.artifact`), ``config.yaml`` and ``metrics.json``. A rerun of a
finished config only reports; a killed run resumes from ``last.ckpt``.

With ``artifact=<folder>`` nothing is trained: the ``dataset=`` cohort's test split (all of it for an external
cohort, ``dataset.split=none``) is normalised with the artifact's statistics and scored, and predictions,
importance and bootstrap metrics go to ``<folder>/external/<dataset>-<cohort version>-<hash>/``, next to the
training metrics, which stay as they are.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from eagrl.errors import ConfigError
from eagrl.experts.importance import export_importance
from eagrl.stages.runtime import loggers, prepared_datamodule, start
from eagrl.utils.artifacts import (
    METRICS,
    StageArtifact,
    config_hash,
    epoch_checkpoint,
    find_artifact,
    report,
    resumable,
)
from eagrl.utils.epochs import EpochLog
from eagrl.utils.rng import RNGState

log = logging.getLogger(__name__)


def artifact(cfg: DictConfig) -> StageArtifact:
    """Where this config's expert artifacts live (``artifact``, the option that scores a finished one, is not part
    of the training config)."""
    return StageArtifact.of(
        cfg, "expert", cfg.expert.name, name=f"seed{cfg.seed}-{{hash}}", exclude=("robustness", "artifact")
    )


def shuffled_test_metrics(target: Path, cfg: DictConfig) -> dict:
    """The trained expert's test metrics with a fraction of each patient's feature columns permuted (the paper's
    robustness test, Figure 3: the order of the features is what a tensor model reads them by)."""
    from eagrl.data.prompt import patient_rng, shuffle_lines
    from eagrl.evaluation.metrics import bootstrap_metrics
    from eagrl.experts.module import ExpertModule

    checkpoint = target / "checkpoints" / "best.ckpt"
    module = ExpertModule.load_from_checkpoint(checkpoint, weights_only=False).eval()
    datamodule = prepared_datamodule(cfg)
    arrays = datamodule.arrays["test"]
    labels, probabilities = [], []
    for batch in datamodule.dataloader("test"):
        for row, index in enumerate(batch["index"].tolist()):
            order = shuffle_lines(
                list(range(batch["values"].shape[-1])),
                cfg.robustness.shuffle_fraction,
                patient_rng(cfg.robustness.shuffle_seed, arrays.patient_ids[index]),
            )
            batch["values"][row] = batch["values"][row][:, order]
            batch["observed"][row] = batch["observed"][row][:, order]
        with torch.no_grad():
            probabilities.append(torch.sigmoid(module(batch)).numpy())
        labels.append(batch["label"].numpy())
    return bootstrap_metrics(
        np.concatenate(labels), np.concatenate(probabilities), cfg.evaluation.resamples, cfg.evaluation.seed
    )


def never_measured(arrays, features) -> dict[str, int]:
    """Feature -> patients of a split (:class:`~eagrl.data.datamodule.SplitArrays`) with no value of it at all, for
    the features some patient lacks."""
    observed = np.concatenate([~np.isnan(arrays.static_raw), arrays.observed.any(axis=1)], axis=1)
    counts = (~observed).sum(axis=0)
    names = features.static_names + features.dynamic_names
    return {name: int(count) for name, count in zip(names, counts, strict=True) if count}


def score_external(cfg: DictConfig) -> dict:
    """Score the finished expert artifact ``cfg.artifact`` on the test split of the ``cfg.dataset`` cohort (all of
    it with ``dataset.split=none``) with the artifact's normalisation statistics; return the metrics."""
    from eagrl.evaluation.metrics import bootstrap_metrics
    from eagrl.experts.artifact import load_card
    from eagrl.experts.module import ExpertModule

    if cfg.robustness.shuffle_fraction:
        raise ConfigError("robustness.shuffle_fraction applies to training runs; leave it 0 with artifact=")
    folder = find_artifact(cfg.artifact, Path(), METRICS, "artifact= must be an eagrl-expert artifact folder").resolve()
    card = load_card(folder)
    if cfg.task.name != card.task:
        raise ConfigError(f"the expert in {folder} predicts {card.task!r}, not {cfg.task.name!r}: set task={card.task}")
    training = json.loads((folder / METRICS).read_text())
    datamodule = instantiate(cfg.datamodule, normalisation=card.normalisation_stats())
    datamodule.prepare_data()
    digest = config_hash(OmegaConf.create({"evaluation": cfg.evaluation}))
    external_dir = folder / "external" / f"{cfg.dataset.name}-{datamodule.cohort_dir.name}-{digest}"
    stage = StageArtifact(external_dir, cfg.overwrite)
    target = stage.folder
    if (metrics := stage.finished("already scored")) is not None:
        return _finish_external(metrics, target, cfg)

    datamodule.setup()
    test = datamodule.arrays["test"]
    if len(set(test.labels.tolist())) < 2:
        raise ConfigError(
            f"the {len(test.labels)} test patients of {cfg.dataset.name} hold one outcome only, so AUROC is "
            "undefined (an external cohort is scored whole with dataset.split=none)"
        )
    missing = never_measured(test, datamodule.features)
    if missing:
        log.info(
            "%s: patients (of %d) with no value of a feature, scored as never measured: %s",
            cfg.dataset.name,
            len(test.labels),
            ", ".join(f"{name} {count}" for name, count in sorted(missing.items(), key=lambda item: -item[1])),
        )
    checkpoint = resumable(folder / card.checkpoint)
    module = ExpertModule.load_from_checkpoint(checkpoint, weights_only=False, map_location="cpu")
    frame = export_importance(module, datamodule, card.importance, card.ig_steps, card.top_k, splits=("test",))
    external = cfg.dataset.name != card.dataset
    manifest = datamodule.cohort.manifest
    metrics = {
        "dataset": cfg.dataset.name,
        "task": card.task,
        "expert": f"{card.expert}@{card.dataset}" if external else card.expert,
        "seed": training["seed"],
        "trained_on": card.dataset,
        "external": external,
        "split": "test",
        "test": bootstrap_metrics(
            frame["label"].to_numpy(), frame["probability"].to_numpy(), cfg.evaluation.resamples, cfg.evaluation.seed
        ),
        "internal_test": training["test"],
        "cohort": {
            "version": datamodule.cohort_dir.name,
            "patients": len(frame),
            "positives": int(frame["label"].sum()),
            "absent_features": manifest.get("absent_features", []),
            "never_measured": missing,
            "outliers": manifest.get("outliers", {}),
        },
        "epochs": training["epochs"],
        "seconds_per_epoch": training["seconds_per_epoch"],
        "parameters": training["parameters"],
        "importance_method": card.importance,
        "top_k": card.top_k,
        "artifact_dir": str(folder),
        "external_dir": str(target),
    }
    stage.create()
    frame.to_parquet(target / "importance.parquet", index=False)
    stage.seal(metrics)
    return _finish_external(metrics, target, cfg)


def _finish_external(metrics: dict, target: Path, cfg: DictConfig) -> dict:
    """Report an external scoring run: its metrics into the run directory and one summary line beside the
    artifact's own (internal) test scores."""
    from eagrl.evaluation.metrics import format_scores

    cohort = metrics["cohort"]
    report(
        cfg,
        metrics,
        f"{metrics['expert']} on {metrics['dataset']}/{metrics['task']} ({cohort['patients']} patients, "
        f"{cohort['positives']} positive): test {format_scores(metrics['test'])}; on its own test split "
        f"({metrics['trained_on']}): {format_scores(metrics['internal_test'])} -> {target}",
    )
    return metrics


def run(cfg: DictConfig) -> dict:
    """Train (or resume), test with bootstrap and export importance (or only report a finished expert); with
    ``artifact=`` score a finished expert on the ``dataset=`` cohort instead. Returns the metrics."""
    from eagrl.evaluation.metrics import bootstrap_metrics
    from eagrl.experts.module import ExpertModule

    start(cfg, seed=not cfg.artifact)
    if cfg.artifact:
        return score_external(cfg)
    stage = artifact(cfg)
    target = stage.folder
    if (metrics := stage.finished("expert already trained")) is not None:
        return _finish(metrics, target, cfg)

    datamodule = prepared_datamodule(cfg)
    features = datamodule.features
    if not datamodule.arrays["train"].patient_ids:
        raise ConfigError(
            f"dataset {cfg.dataset.name!r} has no training patients (dataset.split={cfg.dataset.split}); to score "
            "an external cohort with a trained expert, pass artifact=<its folder>"
        )
    module = ExpertModule(
        name=cfg.expert.name,
        n_dynamic=len(features.dynamic),
        n_static=len(features.static),
        params=OmegaConf.to_container(cfg.expert.params),
        lr=cfg.expert.lr,
        weight_decay=cfg.expert.weight_decay,
        on_nonfinite=cfg.train.on_nonfinite,
    )
    checkpoints = stage.checkpoints
    timer = EpochLog(f"{cfg.expert.name} seed {cfg.seed}")
    callbacks = [
        ModelCheckpoint(
            dirpath=checkpoints,
            filename="best",
            monitor=cfg.train.monitor,
            mode="max",
            enable_version_counter=False,
        ),
        epoch_checkpoint(checkpoints),
        EarlyStopping(monitor=cfg.train.monitor, mode="max", patience=cfg.train.patience),
        timer,
        RNGState(),
    ]
    resume = stage.resume_from()
    with loggers(cfg) as run_loggers:
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=run_loggers or False)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        best = checkpoints / "best.ckpt"
        skipped = module.guard.count
        module = ExpertModule.load_from_checkpoint(best, weights_only=False) if best.is_file() else module
        expert_cfg = cfg.expert
        importance = export_importance(module, datamodule, expert_cfg.importance, expert_cfg.ig_steps, expert_cfg.top_k)
        test = importance[importance["split"] == "test"]
        metrics = {
            "dataset": cfg.dataset.name,
            "task": cfg.task.name,
            "expert": cfg.expert.name,
            "seed": cfg.seed,
            "test": bootstrap_metrics(
                test["label"].to_numpy(), test["probability"].to_numpy(), cfg.evaluation.resamples, cfg.evaluation.seed
            ),
            "best_val": float(trainer.checkpoint_callback.best_model_score or float("nan")),
            "epochs": trainer.current_epoch,
            "resumed": resume is not None,
            "seconds_per_epoch": float(np.mean(timer.seconds)) if timer.seconds else float("nan"),
            "parameters": sum(p.numel() for p in module.parameters()),
            "nonfinite_skips": skipped,
            "importance_method": cfg.expert.importance,
            "top_k": cfg.expert.top_k,
            "artifact_dir": str(target),
        }
        if trainer.is_global_zero:  # one writer under data-parallel training
            from eagrl.experts.artifact import write_card

            importance.to_parquet(target / "importance.parquet", index=False)
            write_card(target, cfg, datamodule.normalisation)
            stage.seal(metrics)
    return _finish(metrics, target, cfg) if trainer.is_global_zero else metrics


def _finish(metrics: dict, target: Path, cfg: DictConfig) -> dict:
    """Report the run (its metrics into the run directory, one summary line) and return the metrics; with
    ``robustness.shuffle_fraction`` > 0 the test metrics are those with shuffled feature columns."""
    from eagrl.evaluation.metrics import format_scores

    if cfg.robustness.shuffle_fraction:
        metrics = metrics | {
            "test": shuffled_test_metrics(target, cfg),
            "shuffle_fraction": cfg.robustness.shuffle_fraction,
            "shuffle_seed": cfg.robustness.shuffle_seed,
        }
    report(
        cfg,
        metrics,
        f"{metrics['expert']} on {metrics['dataset']}/{metrics['task']} seed {metrics['seed']}: "
        f"test {format_scores(metrics['test'])} "
        f"({metrics['epochs']} epochs, {metrics['seconds_per_epoch']:.2f} s/epoch) -> {target}",
    )
    return metrics
