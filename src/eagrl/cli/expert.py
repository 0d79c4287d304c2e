"""``eagrl-expert``: train an expert EHR model, test it with bootstrap, export per-patient salient features.

    eagrl-expert expert=concare dataset=tjh
    eagrl-expert -m expert=concare,adacare,retain,stagenet,gru,lstm,transformer \
        dataset=tjh,physionet2012 seed=0,1,2
    eagrl-aggregate logs/expert/multiruns/<datetime>
    eagrl-expert artifact=<artifact folder> dataset=physionet2012_b    # score a trained expert on another cohort

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
import time
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from eagrl.data.cohort import SPLITS
from eagrl.errors import ConfigError
from eagrl.utils.artifacts import (
    METRICS,
    config_hash,
    epoch_checkpoint,
    find_artifact,
    finished_metrics,
    resumable,
    seal,
)
from eagrl.utils.entry import CONFIG_DIR, build_loggers, close_loggers, configure_threads, console, report, user_errors
from eagrl.utils.epochs import EpochLog
from eagrl.utils.rng import RNGState

log = logging.getLogger(__name__)

#: seconds between the log lines that report the progress of the importance export
PROGRESS_LOG_SECONDS = 30.0


def artifact_dir(cfg: DictConfig) -> Path:
    """Where this config's expert artifacts live (``artifact``, the option that scores a finished one, is not part
    of the training config)."""
    root = Path(cfg.paths.artifact_dir).expanduser().resolve()
    digest = config_hash(cfg, exclude=("robustness", "artifact"))
    return root / "expert" / cfg.dataset.name / cfg.task.name / cfg.expert.name / f"seed{cfg.seed}-{digest}"


def shuffled_test_metrics(target: Path, cfg: DictConfig) -> dict:
    """The trained expert's test metrics with a fraction of each patient's feature columns permuted (the paper's
    robustness test, Figure 3: the order of the features is what a tensor model reads them by)."""
    from eagrl.data.prompt import patient_rng, shuffle_lines
    from eagrl.evaluation.metrics import bootstrap_metrics
    from eagrl.experts.module import ExpertModule

    checkpoint = target / "checkpoints" / "best.ckpt"
    module = ExpertModule.load_from_checkpoint(checkpoint, weights_only=False).eval()
    datamodule = instantiate(cfg.datamodule)
    datamodule.prepare_data()
    datamodule.setup()
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


def export_importance(
    module, datamodule, method: str, ig_steps: int, top_k: int, splits: tuple[str, ...] = SPLITS
) -> pd.DataFrame:
    """Probabilities and feature importance (``method``, see :mod:`eagrl.experts.importance`) for every patient of
    ``splits``. Shows a progress bar on a terminal and logs the progress every :data:`PROGRESS_LOG_SECONDS`."""
    from tqdm.auto import tqdm

    from eagrl.experts.importance import feature_importance, top_k_features

    names = datamodule.features.static_names + datamodule.features.dynamic_names
    module.eval()
    sizes = {split: len(datamodule.arrays[split].patient_ids) for split in splits}
    total, done = sum(sizes.values()), 0
    resolved = method if method != "auto" else "native" if module.net.has_native_importance else "integrated_gradients"
    log.info(
        "exporting %s importance for %d patients (%s)",
        resolved,
        total,
        ", ".join(f"{split} {size}" for split, size in sizes.items()),
    )
    started = last_log = time.monotonic()
    frames = []
    with tqdm(total=total, desc="importance", unit="patient", disable=None, leave=False) as bar:
        for split in splits:
            probabilities, importances = [], []
            for batch in datamodule.dataloader(split):
                with torch.no_grad():
                    probabilities.append(torch.sigmoid(module(batch)).numpy())
                importances.append(feature_importance(module.net, batch, method, ig_steps).numpy())
                done += len(batch["label"])
                bar.update(len(batch["label"]))
                if time.monotonic() - last_log >= PROGRESS_LOG_SECONDS:
                    last_log, elapsed = time.monotonic(), time.monotonic() - started
                    log.info(
                        "importance: %d of %d patients (%.0f %%), %.0f s, about %.0f s left",
                        done, total, 100 * done / total, elapsed, elapsed * (total - done) / done,
                    )  # fmt: skip
            arrays = datamodule.arrays[split]
            importance = np.concatenate(importances) if importances else np.zeros((0, len(names)), np.float32)
            ranking = top_k_features(importance, names, len(names))
            frames.append(
                pd.DataFrame(
                    {
                        "patient_id": arrays.patient_ids,
                        "split": split,
                        "label": arrays.labels,
                        "probability": np.concatenate(probabilities) if probabilities else np.zeros(0, np.float32),
                        "importance": list(importance),
                        "ranking": ranking,
                        "top_k": [row[:top_k] for row in ranking],
                    }
                )
            )
    log.info("importance exported for %d patients in %.0f s", total, time.monotonic() - started)
    return pd.concat(frames, ignore_index=True)


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
    configure_threads(cfg.num_threads)
    folder = find_artifact(cfg.artifact, Path(), METRICS, "artifact= must be an eagrl-expert artifact folder").resolve()
    card = load_card(folder)
    if cfg.task.name != card.task:
        raise ConfigError(f"the expert in {folder} predicts {card.task!r}, not {cfg.task.name!r}: set task={card.task}")
    training = json.loads((folder / METRICS).read_text())
    datamodule = instantiate(cfg.datamodule, normalisation=card.normalisation_stats())
    datamodule.prepare_data()
    digest = config_hash(OmegaConf.create({"evaluation": cfg.evaluation}))
    target = folder / "external" / f"{cfg.dataset.name}-{datamodule.cohort_dir.name}-{digest}"
    if (metrics := finished_metrics(target, cfg.overwrite)) is not None:
        log.info("already scored: %s (overwrite=true redoes it)", target)
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
    target.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(target / "importance.parquet", index=False)
    seal(target, metrics)
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


@user_errors("expert")
def run(cfg: DictConfig) -> dict:
    """Train (or resume), test with bootstrap, export importance; return the metrics."""
    from eagrl.evaluation.metrics import bootstrap_metrics
    from eagrl.experts.module import ExpertModule

    if cfg.artifact:
        return score_external(cfg)
    configure_threads(cfg.num_threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    target = artifact_dir(cfg)
    if (metrics := finished_metrics(target, cfg.overwrite)) is not None:
        log.info("expert already trained: %s (overwrite=true retrains)", target)
        return _finish(metrics, target, cfg)

    datamodule = instantiate(cfg.datamodule)
    datamodule.prepare_data()
    datamodule.setup()
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
    checkpoints = target / "checkpoints"
    last = checkpoints / "last.ckpt"
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
    loggers = build_loggers(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    status = "failed"
    try:
        resume = resumable(last)
        if resume:
            log.info("resuming from %s", resume)
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
            seal(target, metrics)
        status = "success"
    finally:
        close_loggers(loggers, status)
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


@console
@hydra.main(config_path=CONFIG_DIR, config_name="expert", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Console script ``eagrl-expert``; returns the test AUROC (for sweepers; with ``artifact=``, on the scored
    cohort)."""
    return run(cfg)["test"]["auroc"]["mean"]


if __name__ == "__main__":
    main()
