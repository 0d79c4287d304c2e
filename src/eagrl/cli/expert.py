"""``eagrl-expert``: train an expert EHR model, test it with bootstrap, export per-patient salient features.

    eagrl-expert expert=concare dataset=tjh
    eagrl-expert -m expert=concare,adacare,retain,stagenet,gru,lstm,transformer \
        dataset=tjh,physionet2012 seed=0,1,2
    eagrl-aggregate logs/expert/multiruns/<datetime>

Artifacts go to ``<paths.artifact_dir>/expert/<dataset>/<task>/<expert>/seed<seed>-<config hash>/``:
``checkpoints/{best,last}.ckpt``, ``importance.parquet`` (per patient: split, label, probability, importance
over the S + F features, ranking, top-k set C_exp) and ``metrics.json``. A rerun of a finished config only
reports; a killed run resumes from ``last.ckpt``.
"""

from __future__ import annotations

import logging
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
from eagrl.utils.artifacts import config_hash, epoch_checkpoint, finished_metrics, resumable, seal
from eagrl.utils.entry import CONFIG_DIR, build_loggers, close_loggers, configure_threads, console, report, user_errors
from eagrl.utils.epochs import EpochLog
from eagrl.utils.rng import RNGState

log = logging.getLogger(__name__)


def artifact_dir(cfg: DictConfig) -> Path:
    """Where this config's expert artifacts live."""
    root = Path(cfg.paths.artifact_dir).expanduser().resolve()
    digest = config_hash(cfg, exclude=("robustness",))
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


def export_importance(module, datamodule, cfg: DictConfig) -> pd.DataFrame:
    """Probabilities and feature importance for every patient of every split."""
    from eagrl.experts.importance import feature_importance, top_k_features

    names = datamodule.features.static_names + datamodule.features.dynamic_names
    module.eval()
    frames = []
    for split in SPLITS:
        loader = datamodule.dataloader(split)
        probabilities, importances = [], []
        for batch in loader:
            with torch.no_grad():
                probabilities.append(torch.sigmoid(module(batch)).numpy())
            importances.append(
                feature_importance(module.net, batch, cfg.expert.importance, cfg.expert.ig_steps).numpy()
            )
        importance = np.concatenate(importances)
        arrays = datamodule.arrays[split]
        ranking = top_k_features(importance, names, len(names))
        frames.append(
            pd.DataFrame(
                {
                    "patient_id": arrays.patient_ids,
                    "split": split,
                    "label": arrays.labels,
                    "probability": np.concatenate(probabilities),
                    "importance": list(importance),
                    "ranking": ranking,
                    "top_k": [row[: cfg.expert.top_k] for row in ranking],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@user_errors("expert")
def run(cfg: DictConfig) -> dict:
    """Train (or resume), test with bootstrap, export importance; return the metrics."""
    from eagrl.evaluation.metrics import bootstrap_metrics
    from eagrl.experts.module import ExpertModule

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
        importance = export_importance(module, datamodule, cfg)
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
            importance.to_parquet(target / "importance.parquet", index=False)
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
    """Console script ``eagrl-expert``; returns the test AUROC (for sweepers)."""
    return run(cfg)["test"]["auroc"]["mean"]


if __name__ == "__main__":
    main()
