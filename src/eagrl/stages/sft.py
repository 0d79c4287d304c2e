"""The SFT stage (``eagrl-sft``): Stage 1 SFT of the policy on the selected MCTS trajectories (``sft.mode``
trajectory), on the expert's features and the label (expert_label), or the label-only SFT baseline.

Artifacts go to ``<paths.artifact_dir>/sft/<dataset>/<task>/<backbone>/<mode>-<hash>/``: the LoRA adapter
(``adapter_config.json``, ``adapter_model.safetensors``, loadable by ``eagrl-evaluate adapter=<folder>``),
``eagrl_adapter.json`` (method name, the prompt it was trained with, its inputs), ``metrics.json``,
``validation.csv`` and ``checkpoints/last.ckpt`` (adapter + optimiser at the end of every epoch: a killed run redoes
its epoch). The hash covers the config and the content of the trajectories file, so a new selection trains a new
adapter.

With ``sft.val_score`` set, the validation split's patients are answered and scored after every epoch and the saved
adapter is the epoch with the best validation AUROC (the last epoch's goes to ``last/``): chosen on validation,
never on test.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from eagrl.errors import ConfigError, DataError
from eagrl.policy.backbone import write_adapter_info
from eagrl.stages.runtime import loggers, prepared_datamodule, start
from eagrl.utils.artifacts import StageArtifact, epoch_checkpoint, file_digest, find_artifact, report, stage_root
from eagrl.utils.epochs import EpochLog
from eagrl.utils.rng import RNGState

log = logging.getLogger(__name__)

MODES = ("trajectory", "label_only", "expert_label")


def trajectory_file(cfg: DictConfig) -> Path:
    """The ``selected.parquet`` of the eagrl-mcts artifact this run trains on."""
    folder = find_artifact(
        cfg.trajectories,
        stage_root(cfg, "mcts", cfg.backbone.name),
        "selected.parquet",
        f"run `eagrl-mcts dataset={cfg.dataset.name} task={cfg.task.name} backbone={cfg.backbone.name}` first, or "
        "set trajectories=<an eagrl-mcts artifact folder>",
    )
    return folder / "selected.parquet"


def load_examples(cfg: DictConfig) -> tuple[list, Path | None]:
    """The chat examples of ``sft.mode`` and the file their completions came from: the trajectories, the expert's
    importance (expert-label) or None (label-only). Label-only and expert-label completions are ``sft.completion``
    with the patient's ``{label}`` (0 or 1), ``{answer}`` (``sft.label_answers[label]``) and ``{features}``
    (expert-label: C_exp). Every mode keeps the patients of ``max_patients`` training patients (a label-stratified
    sample, the one eagrl-mcts searches with the same value; None = all)."""
    from eagrl.policy.sft import ChatExample

    if cfg.sft.mode == "trajectory":
        path = trajectory_file(cfg)
        try:
            frame = pd.read_parquet(path, columns=["patient_id", "system", "user", "completion"])
        except (OSError, ValueError, KeyError) as error:
            raise DataError(f"{path}: unreadable trajectories ({type(error).__name__}: {error})") from None
        if cfg.max_patients is not None:
            sample = {str(record.patient_id) for record in prepared_datamodule(cfg).records("train", cfg.max_patients)}
            frame = frame[frame["patient_id"].astype(str).isin(sample)]
        if frame.empty:
            sampled = f" of the {cfg.max_patients} training patients max_patients keeps" if cfg.max_patients else ""
            raise DataError(
                f"{path} holds no selected trajectory{sampled}: relax mcts.selection (correct_side=false, min_att=0) "
                "or raise mcts.rollouts, then rerun eagrl-mcts"
            )
        examples = [
            ChatExample(
                row.patient_id,
                [{"role": "system", "content": row.system}, {"role": "user", "content": row.user}],
                row.completion,
            )
            for row in frame.itertuples(index=False)
        ]
        return examples, path
    records, prompts = prepared_datamodule(cfg).patients("train", cfg.task, cfg.prompt, cfg.max_patients)
    source, features = expert_feature_lists(cfg, records, prompts) if cfg.sft.mode == "expert_label" else (None, None)
    answers = cfg.sft.get("label_answers")
    try:
        examples = [
            ChatExample(
                record.patient_id,
                prompt.messages(),
                cfg.sft.completion.format(
                    label=record.label,
                    answer=answers[record.label] if answers else record.label,
                    features=features[i] if features else "",
                ),
            )
            for i, (record, prompt) in enumerate(zip(records, prompts, strict=True))
        ]
    except (KeyError, IndexError) as error:
        raise ConfigError(
            f"sft.completion={cfg.sft.completion!r}: its fields are {{label}}, {{answer}} (sft.label_answers) and "
            f"{{features}} ({type(error).__name__}: {error})"
        ) from None
    return examples, source


def expert_feature_lists(cfg: DictConfig, records: list, prompts: list) -> tuple[Path, list[str]]:
    """The guiding expert's importance file and, per patient, C_exp written as the policy writes its feature list:
    the expert's top ``salient.top_k`` features among those the prompt shows with a value, joined by ``"; "``."""
    from eagrl.experts.salient import check_patients, expert_importance, salient_features

    path, importance = expert_importance(cfg)
    check_patients(importance, [record.patient_id for record in records], path)
    lists = [
        "; ".join(salient_features(importance.loc[pid, "ranking"], prompt.observed_features, cfg.salient.top_k))
        for pid, prompt in zip([record.patient_id for record in records], prompts, strict=True)
    ]
    return path, lists


def split_by_patient(patient_ids: list[str], val_fraction: float, seed: int) -> set[str]:
    """The patients held out for validation loss (seeded; none when the fraction rounds to 0)."""
    unique = sorted(set(patient_ids))
    count = round(val_fraction * len(unique))
    if count >= len(unique):
        raise ConfigError(f"sft.val_fraction={val_fraction} leaves no training patient out of {len(unique)}")
    return set(np.random.default_rng(seed).choice(unique, size=count, replace=False).tolist()) if count else set()


def epoch_validation(cfg: DictConfig, tokenizer, batch_size: int):
    """The :class:`~eagrl.evaluation.validation.EpochValidation` callback of ``sft.val_score`` (None when unset)."""
    from eagrl.evaluation.validation import EpochValidation
    from eagrl.policy.scoring import METHODS

    if cfg.sft.val_score is None:
        return None
    if cfg.sft.val_score not in METHODS:
        raise ConfigError(f"sft.val_score={cfg.sft.val_score!r}: use one of {', '.join(METHODS)}, or null")
    records, prompts = prepared_datamodule(cfg).patients("val", cfg.task, cfg.prompt, cfg.sft.val_patients)
    if len({record.label for record in records}) < 2:
        raise ConfigError(
            f"the {len(records)} validation patients hold one outcome only, so their AUROC is undefined: raise "
            "sft.val_patients or set sft.val_score=null (the last epoch's adapter is saved)"
        )
    prompt_ids = [
        tokenizer(
            tokenizer.apply_chat_template(prompt.messages(), add_generation_prompt=True, tokenize=False),
            add_special_tokens=False,
        )["input_ids"]
        for prompt in prompts
    ]
    labels = np.array([record.label for record in records])
    return EpochValidation(tokenizer, prompt_ids, labels, cfg.sft.val_max_new_tokens, cfg.sft.val_score, batch_size)


def artifact(cfg: DictConfig, inputs: dict[str, str]) -> StageArtifact:
    """Where this run's adapter lives."""
    # max_patients=null (every training patient) hashes as the configs written before the key existed did, so their
    # adapters stay valid
    unset = ("max_patients",) if cfg.max_patients is None else ()
    name = f"{cfg.sft.mode}-{{hash}}"
    return StageArtifact.of(cfg, "sft", cfg.backbone.name, name=name, exclude=unset, inputs=inputs)


def run(cfg: DictConfig) -> dict:
    """Train (or resume) the adapter and save it with its metadata (or only report a finished one); return the
    metrics."""
    from eagrl.evaluation.validation import COLUMNS
    from eagrl.policy.backbone import attach_lora, load_backbone
    from eagrl.policy.sft import PolicySFTModule, sft_loader, tokenize_example

    threads = start(cfg)
    if cfg.sft.mode not in MODES:
        raise ConfigError(f"sft.mode={cfg.sft.mode!r}: use one of {', '.join(MODES)}")
    examples, source = load_examples(cfg)
    inputs = {"trajectories" if cfg.sft.mode == "trajectory" else "expert": file_digest(source)} if source else {}
    stage = artifact(cfg, inputs)
    target = stage.folder
    if (metrics := stage.finished("adapter already trained")) is not None:
        _finish(metrics, cfg)
        return metrics
    stage.create()

    backbone = load_backbone(cfg.backbone)
    tokenizer = backbone.tokenizer
    limit = cfg.sft.max_length or backbone.model.config.max_position_embeddings
    tokenised = [(example.patient_id, tokenize_example(tokenizer, example)) for example in examples]
    kept = [(pid, item) for pid, item in tokenised if len(item["input_ids"]) <= limit]
    if len(kept) < len(tokenised):
        log.warning("skipped %d example(s) longer than %d tokens (sft.max_length)", len(tokenised) - len(kept), limit)
    if not kept:
        raise ConfigError(f"every example is longer than sft.max_length={limit} tokens; shorten the prompts")
    held_out = split_by_patient([pid for pid, _ in kept], cfg.sft.val_fraction, cfg.seed)
    train_items = [item for pid, item in kept if pid not in held_out]
    val_items = [item for pid, item in kept if pid in held_out]
    pad_id = tokenizer.pad_token_id
    train_loader = sft_loader(train_items, cfg.sft.batch_size, pad_id, shuffle=True, seed=cfg.seed)
    val_loader = sft_loader(val_items, cfg.sft.batch_size, pad_id, shuffle=False, seed=cfg.seed) if val_items else None

    model = attach_lora(backbone.model, cfg.backbone.lora)
    if cfg.sft.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    validation = epoch_validation(cfg, tokenizer, cfg.sft.val_batch_size)
    module = PolicySFTModule(
        model,
        lr=cfg.sft.lr,
        weight_decay=cfg.sft.weight_decay,
        on_nonfinite=cfg.sft.on_nonfinite,
        frozen_cache_gb=cfg.sft.frozen_cache_gb,
    )
    resume = stage.resume_from()
    with loggers(cfg) as run_loggers:
        trainer = instantiate(
            cfg.trainer,
            max_epochs=cfg.sft.epochs,
            accumulate_grad_batches=cfg.sft.accumulate_grad_batches,
            gradient_clip_val=cfg.sft.gradient_clip_val,
            limit_val_batches=1.0 if val_loader else 0,
            # validation first: the epoch's log line then shows that epoch's val/auroc
            callbacks=[
                *([validation] if validation else []),
                epoch_checkpoint(stage.checkpoints),
                EpochLog(f"sft-{cfg.sft.mode}"),
                RNGState(),
            ],
            logger=run_loggers or False,
        )
        started = time.perf_counter()
        trainer.fit(module, train_loader, val_loader, ckpt_path=resume)
        seconds = time.perf_counter() - started
        selected = {"by": "last epoch (not validated)"}
        if validation is not None:
            model.save_pretrained(target / "last")
            row = validation.best.restore(model)
            selected = {"by": "validation auroc", "score": cfg.sft.val_score, **row} if row else selected
            pd.DataFrame(validation.rows, columns=["epoch", *COLUMNS]).to_csv(target / "validation.csv", index=False)
        model.save_pretrained(target)
        logged = {key: float(value) for key, value in trainer.callback_metrics.items()}
        trajectories = str(source) if cfg.sft.mode == "trajectory" else None
        write_adapter_info(target, cfg, f"sft-{cfg.sft.mode}", inputs=inputs, trajectories=trajectories)
        train_tokens = sum(len(item["input_ids"]) for item in train_items) * cfg.sft.epochs
        metrics = {
            "dataset": cfg.dataset.name,
            "task": cfg.task.name,
            "backbone": cfg.backbone.name,
            "method": f"sft-{cfg.sft.mode}",
            "seed": cfg.seed,
            "examples": {"train": len(train_items), "val": len(val_items), "too_long": len(tokenised) - len(kept)},
            "train_patients": len({pid for pid, _ in kept} - held_out),
            "epochs": trainer.current_epoch,
            "optimizer_steps": trainer.global_step,
            "train_loss": logged.get("train/loss_epoch"),
            "val_loss": logged.get("val/loss"),
            "selected": selected,
            "mean_tokens_per_example": float(np.mean([len(item["input_ids"]) for item in train_items])),
            "seconds_this_run": seconds,
            "resumed": resume is not None,
            "train_tokens_per_second": train_tokens / seconds if seconds else None,
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "nonfinite_skips": module.guard.count,
            "frozen_layer_cache": module.frozen_cache.summary() if module.frozen_cache else None,
            "threads": threads,
            "artifact_dir": str(target),
        }
        stage.seal(metrics)
    _finish(metrics, cfg)
    return metrics


def _finish(metrics: dict, cfg: DictConfig) -> None:
    """Report the run: its metrics into the run directory and one summary line."""
    train, val = (metrics[key] for key in ("train_loss", "val_loss"))  # None: not logged in this run
    report(
        cfg,
        metrics,
        f"{metrics['method']} {metrics['backbone']} on {metrics['dataset']}/{metrics['task']}: "
        f"{metrics['examples']['train']} examples, {metrics['optimizer_steps']} steps, train loss "
        f"{'-' if train is None else f'{train:.3f}'}, val loss {'-' if val is None else f'{val:.3f}'} "
        f"({metrics['seconds_this_run']:.0f} s) -> {metrics['artifact_dir']}",
    )
