"""The RL stage (``eagrl-rl``): Stage 2 — attention-aligned RL of the policy (EAG-RL, or the GRPO / DAPO
baselines).

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

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from eagrl.errors import ConfigError
from eagrl.evaluation.plots import training_curves
from eagrl.evaluation.validation import COLUMNS as VALIDATION_COLUMNS
from eagrl.evaluation.validation import REWARD_COLUMNS
from eagrl.experts.salient import check_patients, expert_importance
from eagrl.policy.backbone import ADAPTER_INFO, adapter_digest, check_trained_prompt, write_adapter_info
from eagrl.rl.rollout import build_prompts
from eagrl.stages.runtime import loggers, prepared_datamodule, start
from eagrl.utils.artifacts import StageArtifact, file_digest, find_artifact, report, stage_root
from eagrl.utils.config import typed
from eagrl.utils.rng import RNGState

log = logging.getLogger(__name__)

INIT_SOURCES = ("sft", "base")


def init_adapter(cfg: DictConfig) -> Path | None:
    """The adapter RL starts from (None for ``init.from=base``)."""
    if cfg.init["from"] not in INIT_SOURCES:
        raise ConfigError(f"init.from={cfg.init['from']!r}: use one of {', '.join(INIT_SOURCES)}")
    if cfg.init["from"] == "base":
        return None
    return find_artifact(
        cfg.init.adapter,
        stage_root(cfg, "sft", cfg.backbone.name),
        ADAPTER_INFO,
        f"run `eagrl-sft dataset={cfg.dataset.name} task={cfg.task.name} backbone={cfg.backbone.name}` first, set "
        "init.adapter=<an eagrl-sft folder>, or start from the base model (ablation=no_stage1)",
        pattern="trajectory-*",
    )


def method_name(cfg: DictConfig) -> str:
    """``rl-<algorithm>`` plus the ablation when there is one."""
    return f"rl-{cfg.rl.name}" + ("" if cfg.ablation_name == "none" else f"-{cfg.ablation_name}")


def run(cfg: DictConfig) -> dict:
    """Train (or resume) the RL adapter and save it with its history (or only report a finished one); return the
    metrics."""
    from eagrl.policy.backbone import attach_lora, load_adapter, load_backbone
    from eagrl.policy.parsing import FeatureVocabulary
    from eagrl.rewards import RewardConfig
    from eagrl.rl.checkpoint import StepCheckpoint
    from eagrl.rl.distributed import RolloutParallel
    from eagrl.rl.module import PolicyRLModule, RLConfig, step_loader
    from eagrl.rl.rollout import paper_reward

    threads = start(cfg)
    rl = typed(RLConfig, cfg.rl, "rl", seed=cfg.seed)
    reward = typed(RewardConfig, cfg.reward, "reward")
    initial = init_adapter(cfg)
    importance_path, importance = expert_importance(cfg)
    inputs = {"expert_importance": file_digest(importance_path)}
    if initial is not None:
        inputs["init_adapter"] = adapter_digest(initial)
    stage = StageArtifact.of(
        cfg, "rl", cfg.backbone.name, name=f"{cfg.rl.name}-{cfg.ablation_name}-{{hash}}", inputs=inputs
    )
    target = stage.folder
    if (metrics := stage.finished("RL adapter already trained")) is not None:
        _finish(metrics, cfg)
        return metrics
    stage.create()

    datamodule = prepared_datamodule(cfg)
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
    if initial is not None:
        model = load_adapter(backbone.model, initial, trainable=True)
        if rl.kl_coef > 0:  # the KL reference is the starting policy: the same adapter again, frozen
            reference = "reference"
            model.load_adapter(initial, adapter_name=reference, is_trainable=False)
            model.set_adapter("default")
        check_trained_prompt(initial, cfg.prompt)
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
    resume = stage.resume_from()
    # data-parallel RL averages its own gradients (RolloutParallel): DDP's wrapper cannot follow its passes
    parallel = {"strategy": RolloutParallel()} if cfg.trainer.get("strategy") == "ddp" else {}
    with loggers(cfg) as run_loggers:
        trainer = instantiate(
            cfg.trainer,
            **parallel,
            max_epochs=1,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            log_every_n_steps=1,
            enable_checkpointing=False,
            callbacks=[StepCheckpoint(stage.checkpoints / "last.ckpt", rl.checkpoint_every_steps), RNGState()],
            logger=run_loggers or False,
        )
        started = time.perf_counter()
        if rl.steps:
            trainer.fit(module, step_loader(rl.steps), ckpt_path=resume)
        seconds = time.perf_counter() - started
        history = pd.DataFrame(module.history)
        validations = pd.DataFrame(module.validations, columns=["step", *VALIDATION_COLUMNS, *REWARD_COLUMNS])
        metrics = summarise(cfg, history, seconds, threads, target, resume is not None)
        metrics["frozen_layer_cache"] = module.frozen.summary() if module.frozen else None
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
            write_adapter_info(
                target, cfg, method_name(cfg), inputs=inputs, init_adapter=str(initial) if initial else None
            )
            stage.seal(metrics)
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
