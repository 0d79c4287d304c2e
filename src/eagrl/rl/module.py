"""``PolicyRLModule``: Stage 2 of EAG-RL, a LightningModule that trains the policy's LoRA adapter with the GRPO
family (METHOD §6): EAG-RL (entropy-aware adaptive up-clip), GRPO (symmetric clip) and DAPO (clip-higher and
dynamic sampling on accuracy), chosen by ``conf/rl/*.yaml``.

One training step (manual optimisation):

1. sample ``prompts_per_step`` training patients (seeded by the step) and ``group_size`` answers each through
   the :class:`~eagrl.policy.engine.GenerationEngine` (π_old = the current policy);
2. score every answer without gradients: log π_old per token, the entropy over the key clinical tokens
   (``<Important Features>``), the attention over each feature's prompt tokens when R_att is internal, and
   log π_ref of the starting policy when ``kl_coef`` > 0 (a frozen copy of the starting adapter, or the base model
   with the adapter disabled for a fresh adapter); reward each answer;
3. DAPO's dynamic sampling drops groups whose accuracy (ŷ on the label's side of 0.5) is all equal and draws
   more patients, up to ``max_resample_rounds``;
4. group-relative advantages; ε_high per answer (adaptive from the key-token entropy, or fixed);
5. ``ppo_epochs`` passes over ``updates_per_step`` minibatches of groups, one optimiser step each (the later ones
   are off-policy, where the clip acts), backpropagating one group at a time with the aggregation's per-token
   weights. Logged per step: the clip fractions, the *adaptive band* fraction (tokens with A > 0 whose ratio lies
   past GRPO's fixed 1 + ε and within 1 + ε_high(τ): where EAG-RL's gradient differs from GRPO's) and the largest
   ratio;
6. every ``val_every_steps`` steps (and after the last) the validation patients are answered and scored; the
   adapter with the best validation AUROC is the one the run reports;
7. after ``stop_after_flat_steps`` steps in a row whose groups all had one reward (every advantage 0, e.g. every
   answer a parse failure: no policy-gradient signal) the run warns and stops early, saving the adapter as usual.

The parts live beside it: rollouts, rewards and the logged rollout values in :mod:`eagrl.rl.rollout`, the loss and
its metrics in :mod:`eagrl.rl.objectives` (:func:`~eagrl.rl.objectives.policy_loss`), data-parallel plumbing in
:mod:`eagrl.rl.distributed`, step checkpoints in :mod:`eagrl.rl.checkpoint`.

Data-parallel (``trainer=ddp``, :class:`~eagrl.rl.distributed.RolloutParallel`): each process samples its share
of the step's patients, gradients are summed across processes (loss weights normalised over every process's answers)
before every optimiser step (every process takes the same number of steps, skips them together, and an idle one
contributes zeros), and the logged values are merged.

Every value is logged as ``train/…`` per step. Checkpoints hold the adapter, the optimiser and the number of
finished steps, so a resumed run continues with the next step's patients.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from eagrl.errors import ConfigError
from eagrl.evaluation.validation import BestAdapter, validate_policy
from eagrl.policy.engine import GenerationEngine, PrefixCache, SamplingConfig
from eagrl.policy.frozen import FrozenLayerCache, close
from eagrl.policy.guided import answer_grammar
from eagrl.policy.lightning import AdapterModule
from eagrl.policy.parsing import FeatureVocabulary, parse_answer
from eagrl.policy.scoring import METHODS as SCORE_METHODS
from eagrl.rewards import attention_agreement, correct_side
from eagrl.rl.distributed import merge_stats, sum_gradients
from eagrl.rl.objectives import ADVANTAGES, AGGREGATIONS, adaptive_clip_high, policy_loss
from eagrl.rl.rollout import (
    Group,
    RewardFunction,
    RLPrompt,
    Scored,
    feature_mass,
    key_token_span,
    rollout_stats,
    score_responses,
)
from eagrl.utils.numerics import NonFiniteGuard

log = logging.getLogger(__name__)

#: what picks the reported adapter among the validations: validation AUROC, or the mean reward of the greedy
#: validation answers (the run's own objective: R_cls and, when its weight is non-zero, R_att)
SELECT_ON = ("auroc", "reward")


@dataclass(frozen=True)
class RLConfig:
    """The ``rl`` config group (see conf/rl/*.yaml for units and the paper's values); the defaults are the shipped
    ``rl=eagrl``'s (a test holds them equal)."""

    name: str = "eagrl"
    steps: int = 30
    prompts_per_step: int = 4
    group_size: int = 4
    updates_per_step: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_new_tokens: int = 320
    temperature: float = 1.0
    top_p: float = 1.0
    guided: bool = False
    guided_features: int = 5
    advantage: str = "grpo"
    aggregation: str = "dapo"
    eps_low: float = 0.2
    eps_high: float = 0.2
    adaptive_clip: bool = True
    eps_min: float = 0.2
    eps_max: float = 0.4
    kl_coef: float = 0.001
    dynamic_sampling: bool = False
    max_resample_rounds: int = 1
    batch_size: int = 16
    checkpoint_every_steps: int = 5
    frozen_cache_gb: float = 1.0
    on_nonfinite: str = "skip"
    ppo_epochs: int = 2
    dtype: str = "float32"
    val_every_steps: int = 0
    val_patients: int | None = None
    val_score: str = "token_expectation"
    select_on: str = "auroc"
    stop_after_flat_steps: int = 3
    seed: int = 0

    def __post_init__(self):
        if self.advantage not in ADVANTAGES:
            raise ConfigError(f"rl.advantage={self.advantage!r}: use one of {', '.join(ADVANTAGES)}")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"rl.aggregation={self.aggregation!r}: use one of {', '.join(AGGREGATIONS)}")
        if self.group_size < 2:
            raise ConfigError(
                f"rl.group_size must be >= 2 (advantages are relative within a group), got {self.group_size}"
            )
        if self.prompts_per_step < 1 or self.updates_per_step < 1 or self.ppo_epochs < 1 or self.steps < 0:
            raise ConfigError("rl.prompts_per_step, rl.updates_per_step and rl.ppo_epochs must be >= 1, rl.steps >= 0")
        if self.stop_after_flat_steps < 0:
            raise ConfigError(f"rl.stop_after_flat_steps must be >= 0 (0 = never), got {self.stop_after_flat_steps}")
        if self.select_on not in SELECT_ON:
            raise ConfigError(f"rl.select_on={self.select_on!r}: use one of {', '.join(SELECT_ON)}")
        if self.val_score not in SCORE_METHODS:
            raise ConfigError(f"rl.val_score={self.val_score!r}: use one of {', '.join(SCORE_METHODS)}")


def flat_streak(history: Sequence[dict[str, float]]) -> int:
    """How many of the last steps in a row had no kept group with a reward spread (``groups_flat`` ==
    ``groups_kept``, none kept included: every advantage 0)."""
    streak = 0
    for stats in reversed(history):
        if stats.get("groups_flat", math.nan) != stats.get("groups_kept"):
            break
        streak += 1
    return streak


def out_of_signal(history: Sequence[dict[str, float]], stop_after_flat_steps: int) -> bool:
    """Whether the last ``stop_after_flat_steps`` steps (0 = never) all lacked a reward spread: the early stop."""
    return 0 < stop_after_flat_steps <= flat_streak(history)


def step_loader(steps: int) -> DataLoader:
    """Batches that pace :class:`PolicyRLModule`: more than ``steps`` of them, so a resumed run that Lightning
    restarts past a batch still reaches the last step (the module stops the loop there)."""
    return DataLoader(torch.arange(2 * steps + 1), batch_size=1)


class PolicyRLModule(AdapterModule):
    """GRPO-family RL of a LoRA policy on :class:`RLPrompt` patients.

    Args:
        model: the policy (a peft model; only the adapter trains).
        tokenizer: its tokenizer.
        prompts: the training patients.
        rl: the algorithm's settings.
        reward: the reward function of one answer.
        vocabulary: reads declared features from answers.
        probe_layers: layers whose attention gives the internal attention agreement (empty = not needed).
        reference_adapter: a frozen adapter of ``model`` holding the starting policy, the KL reference; None = the
            base model with adapters disabled (the start of a fresh adapter).
        val_prompts: validation patients, answered greedily and scored (``rl.val_score``) every
            ``rl.val_every_steps`` steps and after the last one; the adapter with the best validation
            ``rl.select_on`` (AUROC or mean reward) is kept (:attr:`best`), the checkpoint a run reports (chosen on
            validation, never on test).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        prompts: Sequence[RLPrompt],
        rl: RLConfig,
        reward: RewardFunction,
        vocabulary: FeatureVocabulary | None = None,
        probe_layers: Sequence[int] = (),
        reference_adapter: str | None = None,
        val_prompts: Sequence[RLPrompt] = (),
    ):
        super().__init__(rl.lr, rl.weight_decay)
        self.automatic_optimization = False
        self.model, self.tokenizer, self.prompts, self.rl = model, tokenizer, list(prompts), rl
        self.reward, self.vocabulary, self.probe_layers = reward, vocabulary, tuple(probe_layers)
        self.reference_adapter = reference_adapter
        if rl.select_on == "reward" and self.probe_layers:
            raise ConfigError(
                "rl.select_on=reward reads R_att from declared features; reward.attention internal or both needs "
                "a probe pass the validation does not make: use rl.select_on=auroc"
            )
        # the prefix cache holds a call's shared prompt start and a validation batch's prompts for the
        # token-expectation pass (validate_policy); the engine forgets them when the call returns
        self.engine = GenerationEngine(
            model, tokenizer, batch_size=rl.batch_size, progress=False, prefix_cache=PrefixCache(rl.batch_size + 1)
        )
        # the layers below the adapter, run once per step's answers and read by every pass over them (not with probes,
        # which read attention in any layer)
        self.frozen = None if self.probe_layers else FrozenLayerCache.attach(model, rl.frozen_cache_gb)
        self.frozen_checked = False
        # one update per step: the scoring pass doubles as the update's forward pass (see sample_groups)
        self.fused = rl.updates_per_step == 1 and rl.ppo_epochs == 1
        self.guard = NonFiniteGuard(rl.on_nonfinite, "rl.on_nonfinite")
        self.completed_steps = 0
        self.history: list[dict[str, float]] = []
        self.val_prompts = list(val_prompts)
        #: one row per validation: the policy after ``step`` RL steps, its val AUROC / AUPRC and parse failures
        self.validations: list[dict[str, float]] = []
        #: the adapter weights of the validation with the best ``rl.select_on``, and that row
        self.best = BestAdapter(rl.select_on)

    # ---- Lightning plumbing -------------------------------------------------------------------------------------
    @property
    def processes(self) -> tuple[int, int]:
        """(rank, number of data-parallel processes); (0, 1) outside a distributed run."""
        if self._trainer is None or not torch.distributed.is_initialized():
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["rl_completed_steps"] = self.completed_steps
        checkpoint["rl_history"] = self.history
        checkpoint["rl_validations"] = self.validations
        checkpoint["rl_best"] = self.best.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.completed_steps = checkpoint.get("rl_completed_steps", 0)
        self.history = list(checkpoint.get("rl_history", []))
        self.validations = list(checkpoint.get("rl_validations", []))
        self.best.load_state_dict(checkpoint.get("rl_best"))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        """The next RL step (``self.completed_steps``, restored from a checkpoint on resume); the batch only paces
        the loop, which stops once ``rl.steps`` steps are done (see :func:`step_loader`)."""
        step = self.completed_steps
        # done, or resumed from the checkpoint of an early stop
        if step >= self.rl.steps or out_of_signal(self.history, self.rl.stop_after_flat_steps):
            self.trainer.should_stop = True
            return
        self.model.eval()  # no dropout: π_old and π_θ differ by the updates only
        if self.validation_due(step):
            self.validate(step)
        started = time.perf_counter()
        groups, stats = self.collect(step)
        stats["seconds/rollout"] = time.perf_counter() - started
        if groups or self.processes[1] > 1:  # every process takes part in every (possibly empty) update
            started = time.perf_counter()
            stats |= self.update(groups)
            stats["seconds/update"] = time.perf_counter() - started
        self.completed_steps = step + 1
        stats = merge_stats(stats) if self.processes[1] > 1 else stats
        stats["step"] = float(step)
        self.history.append(stats)
        log.info(
            "RL step %d/%d: reward %.3f (R_cls %.3f, R_att %.3f), parse failures %.0f %%, band %.3f, clipped %.3f "
            "(%.0f s)", self.completed_steps, self.rl.steps, stats["reward"], stats["reward_cls"], stats["reward_att"],
            100 * stats["parse_failure"], stats.get("band_fraction", math.nan), stats.get("clip_fraction", math.nan),
            stats["seconds/rollout"] + stats.get("seconds/update", 0.0),
        )  # fmt: skip
        self.log_dict({f"train/{key}": value for key, value in stats.items()}, on_step=True, batch_size=1)
        stopping = self.completed_steps < self.rl.steps and out_of_signal(self.history, self.rl.stop_after_flat_steps)
        if stopping:
            log.warning(
                "RL stops after step %d of %d: for %d steps in a row no kept group had a reward spread (every "
                "advantage 0: nothing to learn; this step: parse failures %.0f %%, accuracy %.0f %%, %d of %d groups "
                "kept). A policy that cannot close the answer format needs Stage 1 first; rl.stop_after_flat_steps=0 "
                "runs every step",
                self.completed_steps, self.rl.steps, flat_streak(self.history), 100 * stats["parse_failure"],
                100 * stats["accuracy"], stats["groups_kept"], stats["groups_sampled"],
            )  # fmt: skip
            self.trainer.should_stop = True
        if (stopping or self.completed_steps == self.rl.steps) and self.validation_due(self.completed_steps, last=True):
            self.validate(self.completed_steps)

    # ---- validation -------------------------------------------------------------------------------------------
    def validation_due(self, completed: int, last: bool = False) -> bool:
        """Whether the policy after ``completed`` steps is validated: every ``val_every_steps`` steps from 0, and
        after the ``last`` step (``rl.steps``, or an early stop), on rank 0's patients only (validation is not split
        across processes)."""
        if not self.val_prompts or self.rl.val_every_steps <= 0 or self.processes[0] != 0:
            return False
        return last or completed % self.rl.val_every_steps == 0

    def validate(self, completed: int) -> dict[str, float]:
        """Greedy answers of the validation patients, scored by ``rl.val_score`` and rewarded (R_att read from the
        declared features); logs ``val/auroc``, ``val/auprc``, ``val/reward`` and its terms, and keeps a copy of the
        adapter when its ``rl.select_on`` is the best so far (:attr:`best`)."""
        row = {"step": float(completed)}
        row.update(
            validate_policy(
                self.engine,
                [prompt.prompt_ids for prompt in self.val_prompts],
                np.array([prompt.label for prompt in self.val_prompts]),
                max_new_tokens=self.rl.max_new_tokens,
                method=self.rl.val_score,
                vocabulary=self.vocabulary,
                # the internal attention agreement needs a probe pass the validation does not make: no reward then
                reward_of=None
                if self.probe_layers
                else lambda index, text, parsed: self.reward(self.val_prompts[index], text, parsed, None),
            )
        )
        self.validations.append(row)
        log.info("validation after %d RL steps: AUROC %.3f, AUPRC %.3f", completed, row["auroc"], row["auprc"])
        if self._trainer is not None:
            self.log_dict({f"val/{key}": value for key, value in row.items() if key != "step"}, batch_size=1)
        self.best.offer(self.model, row)
        return row

    @contextlib.contextmanager
    def reference(self) -> Iterator[None]:
        """Inside the block the model is the KL reference (the starting policy)."""
        if self.reference_adapter is None:
            with self.model.disable_adapter():
                yield
            return
        trained = self.model.active_adapter
        self.model.set_adapter(self.reference_adapter, inference_mode=True)
        try:
            yield
        finally:
            self.model.set_adapter(trained)

    # ---- rollouts ---------------------------------------------------------------------------------------------
    def collect(self, step: int) -> tuple[list[Group], dict[str, float]]:
        """Sample, score and reward groups for one step (with DAPO's dynamic sampling when enabled)."""
        if self.frozen is not None:
            self.frozen.clear()  # the previous step's answers are not scored again
        rng = np.random.default_rng([self.rl.seed, step])
        rank, processes = self.processes
        # this process's share: every processes-th patient of the step's order, and of its resample draws
        order = rng.permutation(len(self.prompts)).tolist()[rank::processes]
        wanted = len(range(rank, min(self.rl.prompts_per_step, len(self.prompts)), processes))
        kept: list[Group] = []
        sampled: list[Group] = []
        rounds = 0
        while order and len(kept) < wanted:
            take, order = order[: wanted - len(kept)], order[wanted - len(kept) :]
            fresh = self.sample_groups([self.prompts[index] for index in take], step)
            sampled += fresh
            kept += [group for group in fresh if not self.rl.dynamic_sampling or group.correct.unique().numel() > 1]
            rounds += 1
            if not self.rl.dynamic_sampling or rounds > self.rl.max_resample_rounds:
                break
        # a group with a non-finite reward or advantage teaches nothing trustworthy: it is dropped (counted)
        finite = []
        for group in kept:
            group.advantages = ADVANTAGES[self.rl.advantage](group.rewards[None])[0]
            if self.guard.check(group.rewards, step, "reward") and self.guard.check(
                group.advantages, step, "advantage"
            ):
                finite.append(group)
        kept = finite
        for group in kept:
            group.eps_high = (
                adaptive_clip_high(group.key_entropy[None], self.rl.eps_min, self.rl.eps_max)[0]
                if self.rl.adaptive_clip
                else torch.full((len(group.responses),), self.rl.eps_high)
            )
        return kept, rollout_stats(sampled, kept, self.guard.count)

    def sample_groups(self, prompts: list[RLPrompt], step: int) -> list[Group]:
        """G answers per prompt from the current policy, scored and rewarded.

        With one update per step the scoring pass keeps its graph and is the update's forward pass too (π_old =
        π_θ there, so the ratio is 1 and only the gradient is needed): one pass over each group instead of two.
        """
        sampling = SamplingConfig(
            max_new_tokens=self.rl.max_new_tokens,
            temperature=self.rl.temperature,
            top_p=self.rl.top_p,
            stop_strings=("</Final answer>",),
            seed=self.rl.seed,
        )
        answers = self.engine.generate(
            [prompt.prompt_ids for prompt in prompts],
            sampling,
            num_samples=self.rl.group_size,
            keys=[f"{step}/{prompt.patient_id}" for prompt in prompts],
            grammars=[answer_grammar(prompt.feature_names, self.rl.guided_features) for prompt in prompts]
            if self.rl.guided
            else None,
        )
        groups = []
        for prompt, generations in zip(prompts, answers, strict=True):
            # the end-of-sequence token is part of the answer: stopping is a decision the policy is trained on
            responses = [g.token_ids + ([g.eos_id] if g.eos_id is not None else []) for g in generations]
            texts = [generation.text for generation in generations]
            with torch.set_grad_enabled(self.fused):
                old = self._score(prompt, responses, entropy=True, probe_layers=self.probe_layers)
            masses = feature_mass(old.prompt_mass, prompt.feature_spans) if old.prompt_mass is not None else None
            terms, correct, key_entropy = [], [], []
            for row, text in enumerate(texts):
                parsed = parse_answer(text, self.vocabulary)
                internal = attention_agreement(masses[row], prompt.expert_distribution) if masses is not None else None
                terms.append(self.reward(prompt, text, parsed, internal))
                correct.append(parsed.parsed and bool(correct_side(prompt.label, parsed.probability)))
                span = key_token_span(self.tokenizer, responses[row])
                key_entropy.append(
                    old.entropy[row, span[0] : span[1]].mean().item() if span and span[1] > span[0] else math.nan
                )
            ref_logp = None
            if self.rl.kl_coef > 0:
                with torch.no_grad(), self.reference():
                    ref_logp = self._score(prompt, responses).logp
            groups.append(
                Group(
                    prompt=prompt,
                    responses=responses,
                    texts=texts,
                    terms=terms,
                    correct=torch.tensor(correct),
                    old=old,
                    key_entropy=torch.tensor(key_entropy),
                    ref_logp=ref_logp,
                )
            )
        return groups

    def _score(self, prompt: RLPrompt, responses: list[list[int]], **options) -> Scored:
        """:func:`score_responses` with this run's pad token, sampling temperature and frozen-layer cache (checked
        against the full pass on the first group, in eval mode; dropped when they disagree)."""
        score = partial(
            score_responses,
            self.model,
            prompt.prompt_ids,
            responses,
            self.tokenizer.pad_token_id,
            temperature=self.rl.temperature,
            **options,
        )
        if self.frozen is not None and not self.frozen_checked:
            self.frozen_checked = True
            training = self.model.training
            self.model.eval()
            try:
                with torch.no_grad():
                    agree = close(score().logp, score(frozen=self.frozen).logp)
            finally:
                self.model.train(training)
            if not agree:
                log.warning("frozen-layer cache off: its split pass does not reproduce this model's log-probabilities")
                self.frozen = None
        return score(frozen=self.frozen)

    # ---- updates ----------------------------------------------------------------------------------------------
    def _minibatches(self, groups: list[Group]) -> list[tuple[list[Group], torch.Tensor | None]]:
        """The ``updates_per_step`` minibatches of this step's groups, each with the aggregation's per-token loss
        weights of its answers ([answers, longest answer]; None when empty).

        Data-parallel, the minibatches split the step's groups of every process (laid out rank by rank) and the
        weights are normalised over the whole minibatch, so the summed gradients equal one process's.
        """
        rank, processes = self.processes
        counts = [len(groups)]
        if processes > 1:
            counts = [0] * processes
            torch.distributed.all_gather_object(counts, len(groups))
        offset = sum(counts[:rank])
        minibatches = []
        for indices in np.array_split(np.arange(sum(counts)), self.rl.updates_per_step):
            members = [groups[index - offset] for index in indices if offset <= index < offset + len(groups)]
            masks = [group.old.mask for group in members]
            before = 0
            if processes > 1:  # every process's masks of this minibatch, to normalise over all of them
                gathered: list[list[torch.Tensor]] = [[] for _ in range(processes)]
                torch.distributed.all_gather_object(gathered, masks)
                before = sum(len(mask) for part in gathered[:rank] for mask in part)
                masks = [mask for part in gathered for mask in part]
            if not masks:
                if processes > 1:  # every process takes the same number of optimiser steps
                    minibatches.append((members, None))
                continue
            width = max(mask.shape[1] for mask in masks)
            mask = torch.cat([torch.nn.functional.pad(mask, (0, width - mask.shape[1])) for mask in masks])
            weights = AGGREGATIONS[self.rl.aggregation](mask, self.rl.max_new_tokens)
            rows = sum(len(group.responses) for group in members)
            minibatches.append((members, weights[before : before + rows]))
        return minibatches

    def update(self, groups: list[Group]) -> dict[str, float]:
        """``updates_per_step`` optimiser steps over minibatches of groups; returns loss and clip statistics."""
        optimizer = self.optimizers()
        distributed = self.processes[1] > 1
        ratio_stats = ("clip_fraction", "clip_high_fraction", "clip_low_fraction", "band_fraction", "kl")
        totals = {"loss": 0.0, **dict.fromkeys(ratio_stats, 0.0)}
        tokens = 0.0
        ratio_max = 0.0
        skipped_updates = 0
        updates = self.rl.updates_per_step * self.rl.ppo_epochs
        minibatches = self._minibatches(groups)
        for members, weights in [batch for _ in range(self.rl.ppo_epochs) for batch in minibatches]:
            row = 0
            loss_sum = 0.0
            counts = dict.fromkeys((*ratio_stats, "tokens"), 0.0)
            finite = True
            for group in members:
                rows, length = len(group.responses), group.old.mask.shape[1]
                group_weights = weights[row : row + rows, :length]
                row += rows
                new = group.old if self.fused else self._score(group.prompt, group.responses)
                loss, group_counts = policy_loss(
                    new.logp,
                    group.old.logp.detach(),
                    group.advantages,
                    group_weights,
                    group.old.mask,
                    eps_low=self.rl.eps_low,
                    eps_high=group.eps_high,
                    eps_fixed=self.rl.eps_high,
                    ref_logp=group.ref_logp,
                    kl_coef=self.rl.kl_coef,
                )
                if not self.guard.check(loss, self.completed_steps):
                    finite = False
                    break
                self.manual_backward(loss)
                loss_sum += float(loss.detach())
                ratio_max = max(ratio_max, group_counts.pop("ratio_max"))
                for key, value in group_counts.items():
                    counts[key] += value
            if distributed:
                finite = sum_gradients(self.model, finite)
            if not finite:
                optimizer.zero_grad()
                skipped_updates += 1
                continue
            self.clip_gradients(optimizer, gradient_clip_val=self.rl.max_grad_norm, gradient_clip_algorithm="norm")
            optimizer.step()
            optimizer.zero_grad()
            totals["loss"] += loss_sum / updates
            for key in ratio_stats:
                totals[key] += counts[key]
            tokens += counts["tokens"]
        stats = {key: value / max(tokens, 1.0) if key != "loss" else value for key, value in totals.items()}
        stats["skipped_updates"] = float(skipped_updates)
        stats["ratio_max"] = ratio_max
        return stats
