"""``eagrl-rl``: Stage 2 — attention-aligned RL of the policy (EAG-RL, or the GRPO / DAPO baselines).

    eagrl-rl dataset=tjh backbone=smollm2_135m            # EAG-RL from the newest Stage-1 SFT adapter
    eagrl-rl rl=grpo        eagrl-rl rl=dapo               # baselines from the same adapter
    eagrl-rl ablation=no_stage1                            # from the base model with a fresh adapter
    eagrl-evaluate adapter=artifacts/rl/tjh/mortality/smollm2_135m/eagrl-none-<hash>

The policy continues training the Stage-1 LoRA adapter (``init.from=sft``) in ``rl.dtype`` (float32: importance
ratios of a bf16 policy are noisy); the KL reference is the starting policy: a frozen second copy of the starting
adapter on the same base weights (for ``init.from=base``, the base model with the adapter disabled). Every
``rl.val_every_steps`` steps the validation patients are answered and scored (``rl.val_score``); the adapter with the
best validation ``rl.select_on`` (AUROC, or the mean reward of the greedy answers) is the one saved and reported
(the last one goes to ``last/``). Artifacts go to
``<paths.artifact_dir>/rl/<dataset>/<task>/<backbone>/<rl.name>-<ablation>-<hash>/``: the adapter (loadable by
``eagrl-evaluate adapter=<folder>``), ``eagrl_adapter.json``, ``history.csv`` (every step's rewards, ε_high,
clip and adaptive-band fractions, entropy, KL, lengths, parse failures, timings), ``validation.csv``,
``curves.png``, ``metrics.json`` and ``checkpoints/last.ckpt`` (a killed run resumes with the next step). The hash
covers the config, the initial adapter's weights and the expert's importance file.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from eagrl.cli.evaluate import ADAPTER_INFO, write_adapter_info
from eagrl.errors import ConfigError
from eagrl.evaluation.plots import training_curves
from eagrl.evaluation.validation import COLUMNS as VALIDATION_COLUMNS
from eagrl.evaluation.validation import REWARD_COLUMNS
from eagrl.experts.salient import check_patients, expert_importance, importance_distribution, salient_features
from eagrl.utils.artifacts import config_hash, file_digest, find_artifact, finished_metrics, resumable, seal
from eagrl.utils.config import typed
from eagrl.utils.entry import CONFIG_DIR, build_loggers, close_loggers, configure_threads, console, report, user_errors
from eagrl.utils.rng import RNGState

log = logging.getLogger(__name__)

INIT_SOURCES = ("sft", "base")


def init_adapter(cfg: DictConfig) -> Path | None:
    """The adapter RL starts from (None for ``init.from=base``)."""
    if cfg.init["from"] not in INIT_SOURCES:
        raise ConfigError(f"init.from={cfg.init['from']!r}: use one of {', '.join(INIT_SOURCES)}")
    if cfg.init["from"] == "base":
        return None
    root = Path(cfg.paths.artifact_dir).expanduser().resolve()
    return find_artifact(
        cfg.init.adapter,
        root / "sft" / cfg.dataset.name / cfg.task.name / cfg.backbone.name,
        ADAPTER_INFO,
        f"run `eagrl-sft dataset={cfg.dataset.name} task={cfg.task.name} backbone={cfg.backbone.name}` first, set "
        "init.adapter=<an eagrl-sft folder>, or start from the base model (ablation=no_stage1)",
        pattern="trajectory-*",
    )


def build_prompts(cfg: DictConfig, datamodule, tokenizer, importance, split: str = "train", count=None) -> list:
    """The patients of ``split`` as :class:`~eagrl.rl.rollout.RLPrompt` (prompt tokens, feature spans, C_exp);
    ``count`` patients (a label-stratified sample; None = all)."""
    from eagrl.rl.rollout import RLPrompt, line_token_spans

    records, prompts = datamodule.patients(split, cfg.task, cfg.prompt, count)
    names = datamodule.features.static_names + datamodule.features.dynamic_names
    built = []
    for record, prompt in zip(records, prompts, strict=True):
        text = tokenizer.apply_chat_template(prompt.messages(), add_generation_prompt=True, tokenize=False)
        ids, spans = line_token_spans(tokenizer, text, prompt.feature_lines)
        row = importance.loc[record.patient_id]
        built.append(
            RLPrompt(
                patient_id=record.patient_id,
                label=record.label,
                prompt_ids=ids,
                expert_features=tuple(salient_features(row["ranking"], prompt.observed_features, cfg.salient.top_k)),
                feature_names=prompt.feature_order,
                feature_spans=tuple(spans),
                expert_distribution=importance_distribution(row["importance"], names, prompt.feature_order),
            )
        )
    return built


def _check_prompt(cfg: DictConfig, adapter: Path) -> None:
    """Warn when RL's prompt config differs from the one the starting adapter was trained with."""
    trained = json.loads((adapter / ADAPTER_INFO).read_text()).get("prompt")
    if trained and trained != OmegaConf.to_container(cfg.prompt, resolve=True):
        log.warning("the starting adapter %s was trained with another prompt config than this run's", adapter)


def method_name(cfg: DictConfig) -> str:
    """``rl-<algorithm>`` plus the ablation when there is one."""
    return f"rl-{cfg.rl.name}" + ("" if cfg.ablation_name == "none" else f"-{cfg.ablation_name}")


@user_errors("rl")
def run(cfg: DictConfig) -> dict:
    """Train (or resume) the RL adapter, save it with its history; return the metrics."""
    from eagrl.policy.backbone import attach_lora, load_adapter, load_backbone
    from eagrl.policy.parsing import FeatureVocabulary
    from eagrl.rewards import RewardConfig
    from eagrl.rl.module import PolicyRLModule, RLConfig, RolloutParallel, StepCheckpoint, paper_reward, step_loader

    rl = typed(RLConfig, cfg.rl, "rl", seed=cfg.seed)
    reward = typed(RewardConfig, cfg.reward, "reward")
    threads = configure_threads(cfg.num_threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    start = init_adapter(cfg)
    importance_path, importance = expert_importance(cfg)
    inputs = {"expert_importance": file_digest(importance_path)}
    if start is not None:
        inputs["init_adapter"] = file_digest(start / "adapter_model.safetensors")
    root = Path(cfg.paths.artifact_dir).expanduser().resolve()
    target = root / "rl" / cfg.dataset.name / cfg.task.name / cfg.backbone.name
    target = target / f"{cfg.rl.name}-{cfg.ablation_name}-{config_hash(cfg, inputs=inputs)}"
    if (metrics := finished_metrics(target, cfg.overwrite)) is not None:
        log.info("RL adapter already trained: %s (overwrite=true retrains)", target)
        _finish(metrics, cfg)
        return metrics
    target.mkdir(parents=True, exist_ok=True)

    datamodule = instantiate(cfg.datamodule)
    datamodule.prepare_data()
    datamodule.setup()
    check_patients(importance, datamodule.arrays["train"].patient_ids, importance_path)
    backbone = load_backbone({**OmegaConf.to_container(cfg.backbone, resolve=True), "dtype": rl.dtype})
    if reward.needs_internal and cfg.backbone.attn_implementation != "eagrl_sdpa":
        raise ConfigError(
            f"reward.attention={reward.attention} reads attention through backbone.attn_implementation=eagrl_sdpa "
            f"(got {cfg.backbone.attn_implementation})"
        )
    prompts = build_prompts(cfg, datamodule, backbone.tokenizer, importance, count=cfg.max_patients)
    val_prompts = []
    if rl.val_every_steps > 0:
        check_patients(importance, datamodule.arrays["val"].patient_ids, importance_path)
        val_prompts = build_prompts(cfg, datamodule, backbone.tokenizer, importance, "val", rl.val_patients)
    reference = None
    if start is not None:
        model = load_adapter(backbone.model, start, trainable=True)
        if rl.kl_coef > 0:  # the KL reference is the starting policy: the same adapter again, frozen
            reference = "reference"
            model.load_adapter(start, adapter_name=reference, is_trainable=False)
            model.set_adapter("default")
        _check_prompt(cfg, start)
    else:
        model = attach_lora(backbone.model, cfg.backbone.lora)
    layers = list(reward.attention_layers) if reward.needs_internal else []
    module = PolicyRLModule(
        model,
        backbone.tokenizer,
        prompts,
        rl,
        reward=paper_reward(FeatureVocabulary(datamodule.features), reward),
        vocabulary=FeatureVocabulary(datamodule.features),
        probe_layers=layers,
        reference_adapter=reference,
        val_prompts=val_prompts,
    )
    checkpoints = target / "checkpoints"
    if cfg.overwrite:
        shutil.rmtree(checkpoints, ignore_errors=True)
    last = checkpoints / "last.ckpt"
    resume = resumable(last)
    loggers = build_loggers(cfg.get("logger"))
    # data-parallel RL averages its own gradients (RolloutParallel): DDP's wrapper cannot follow its passes
    parallel = {"strategy": RolloutParallel()} if cfg.trainer.get("strategy") == "ddp" else {}
    trainer = instantiate(
        cfg.trainer,
        **parallel,
        max_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        enable_checkpointing=False,
        callbacks=[StepCheckpoint(last, rl.checkpoint_every_steps), RNGState()],
        logger=loggers or False,
    )
    status = "failed"
    started = time.perf_counter()
    try:
        if resume:
            log.info("resuming from %s", resume)
        if rl.steps:
            trainer.fit(module, step_loader(rl.steps), ckpt_path=resume)
        seconds = time.perf_counter() - started
        history = pd.DataFrame(module.history)
        validations = pd.DataFrame(module.validations, columns=["step", *VALIDATION_COLUMNS, *REWARD_COLUMNS])
        metrics = summarise(cfg, history, seconds, threads, target, resume is not None)
        if trainer.is_global_zero:  # one writer under data-parallel training
            model.save_pretrained(target / "last", selected_adapters=["default"])
            selected = module.best.restore(model)
            metrics["selected"] = (
                {"by": f"validation {rl.select_on}", "score": rl.val_score, **selected}
                if selected
                else {"by": "last step (not validated)"}
            )
            model.save_pretrained(target, selected_adapters=["default"])
            history.to_csv(target / "history.csv", index=False)
            validations.to_csv(target / "validation.csv", index=False)
            if len(history):
                training_curves(history, validations, target / "curves.png", title=method_name(cfg))
            write_adapter_info(target, cfg, method_name(cfg), inputs=inputs, init_adapter=str(start) if start else None)
            seal(target, metrics)
        status = "success"
    finally:
        close_loggers(loggers, status)
    if trainer.is_global_zero:
        _finish(metrics, cfg)
    return metrics


def summarise(cfg, history: pd.DataFrame, seconds: float, threads: int, target: Path, resumed: bool) -> dict:
    """metrics.json of an RL run: the means of every logged value over the first and the last ``trend_steps`` steps
    (5, or half the run when shorter, so the two windows do not overlap), and the cost."""
    from eagrl.rl.module import flat_streak, out_of_signal

    steps = history.to_dict("records")
    window = min(5, max(1, len(history) // 2)) if len(history) else 0
    first = history.head(window).mean(numeric_only=True).to_dict() if window else {}
    last = history.tail(window).mean(numeric_only=True).to_dict() if window else {}
    return {
        "dataset": cfg.dataset.name,
        "task": cfg.task.name,
        "backbone": cfg.backbone.name,
        "method": method_name(cfg),
        "seed": cfg.seed,
        "steps": len(history),
        # an early stop (rl.stop_after_flat_steps): the trailing steps in a row whose groups had no reward spread
        "stopped_without_signal": len(history) < cfg.rl.steps and out_of_signal(steps, cfg.rl.stop_after_flat_steps),
        "flat_steps_at_end": flat_streak(steps),
        "trend_steps": window,
        "first_steps": first,
        "last_steps": last,
        "seconds_this_run": seconds,
        "seconds_per_step": seconds / len(history) if len(history) else None,
        "resumed": resumed,
        "threads": threads,
        "artifact_dir": str(target),
    }


def _finish(metrics: dict, cfg: DictConfig) -> None:
    """Report the run: its metrics into the run directory and one summary line."""
    first, last = metrics["first_steps"], metrics["last_steps"]
    window = metrics.get("trend_steps", min(5, metrics["steps"]))  # runs before trend_steps: 5-step windows
    trend = (
        f"reward {first.get('reward', np.nan):.3f} -> {last.get('reward', np.nan):.3f}, accuracy "
        f"{first.get('accuracy', np.nan):.2f} -> {last.get('accuracy', np.nan):.2f} (first / last {window} steps)"
        if metrics["steps"]
        else "no RL step (the initial adapter is saved as it is)"
    )
    stopped = " (stopped early: no reward spread)" if metrics.get("stopped_without_signal") else ""
    report(
        cfg,
        metrics,
        f"{metrics['method']} {metrics['backbone']} on {metrics['dataset']}/{metrics['task']}: {metrics['steps']} "
        f"steps{stopped}, {trend} ({metrics['seconds_this_run']:.0f} s) -> {metrics['artifact_dir']}",
    )


@console
@hydra.main(config_path=CONFIG_DIR, config_name="rl", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Console script ``eagrl-rl``."""
    run(cfg)


if __name__ == "__main__":
    main()
