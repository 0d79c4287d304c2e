"""Validation while a policy trains (SFT epochs, RL steps): greedy answers to the validation patients, scored, and
the adapter of the best validation AUROC kept. The checkpoint a run reports is chosen here, on the validation
split, never on test.

    row = validate_policy(engine, prompt_ids, labels, max_new_tokens=128, method="token_expectation")
    best.offer(model, row)          # keeps a copy of the adapter when row["auroc"] is the best so far
    BestAdapter(metric="reward")    # or when the validation reward is (RL: rl.select_on=reward)
    best.restore(model)             # the reported adapter
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch

from eagrl.evaluation.metrics import point_metrics
from eagrl.policy.engine import GenerationEngine, PrefixCache, SamplingConfig
from eagrl.policy.parsing import FeatureVocabulary, ParsedAnswer, parse_answer
from eagrl.policy.scoring import DigitsPerBatch, digit_token_ids, score_answers
from eagrl.rewards.functions import RewardTerms

log = logging.getLogger(__name__)

#: columns of a validation row (``validation.csv``): when (SFT epoch or RL step), AUROC / AUPRC (0–1), the fraction
#: of answers that failed to parse, the validation's wall seconds and, when the run has a reward (RL), the mean reward
#: of the greedy answers and of its terms R_cls and R_att (over the parsed answers)
COLUMNS = ("auroc", "auprc", "parse_failure", "seconds")
REWARD_COLUMNS = ("reward", "reward_cls", "reward_att")


@torch.no_grad()
def validate_policy(
    engine: GenerationEngine,
    prompt_ids: Sequence[Sequence[int]],
    labels: np.ndarray,
    *,
    max_new_tokens: int,
    method: str,
    vocabulary: FeatureVocabulary | None = None,
    reward_of: Callable[[int, str, ParsedAnswer], RewardTerms] | None = None,
) -> dict[str, float]:
    """Greedy answers of the validation patients scored by ``method`` (:func:`~eagrl.policy.scoring.score_answers`).

    Args:
        engine: the policy's generation engine (with a prefix cache, an answer that takes the token-expectation pass
            encodes only itself on its cached prompt).
        prompt_ids: each patient's chat prompt, ready for the assistant's turn.
        labels: ``(patients,)`` 0/1 outcomes.
        max_new_tokens: answer budget.
        method: ``greedy``, ``sample_mean`` or ``token_expectation``.
        vocabulary: reads declared features (the parse status only depends on it for feature lists).
        reward_of: the reward of patient ``i``'s answer text and its parse; given, the row holds the mean reward
            (parse failures at their penalty) and the means of R_cls and R_att over the parsed answers.

    Returns:
        ``{"auroc", "auprc", "parse_failure", "seconds"}`` (AUROC / AUPRC in 0–1), plus ``reward``, ``reward_cls``
        and ``reward_att`` with ``reward_of``.
    """
    started = time.perf_counter()
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0, stop_strings=("</Final answer>",))
    watch = digit_token_ids(engine.tokenizer) if method == "token_expectation" else []
    digits = DigitsPerBatch(engine, prompt_ids, watch) if watch else None
    answers = engine.generate(prompt_ids, sampling, watch=watch, keep_prompts=bool(watch), on_batch=digits)
    texts = [answer[0].text for answer in answers]
    generated = digits.reads if digits else None
    probabilities, _ = score_answers(engine, prompt_ids, texts, method=method, generated=generated)
    scores = point_metrics(np.asarray(labels), probabilities)
    parsed = [parse_answer(text, vocabulary) for text in texts]
    row = {
        "auroc": scores["auroc"],
        "auprc": scores["auprc"],
        "parse_failure": float(np.mean([not answer.parsed for answer in parsed])),
    }
    if reward_of is not None:
        terms = [reward_of(index, text, answer) for index, (text, answer) in enumerate(zip(texts, parsed, strict=True))]
        row["reward"] = float(np.mean([term.total for term in terms]))
        for column, values in (("reward_cls", [t.cls for t in terms]), ("reward_att", [t.att for t in terms])):
            finite = [value for value in values if math.isfinite(value)]
            row[column] = float(np.mean(finite)) if finite else math.nan
    return row | {"seconds": time.perf_counter() - started}


class BestAdapter:
    """The trainable weights (name -> tensor copy) of the validation with the best ``metric`` so far, and that row.

    Ties keep the earlier policy; a NaN (an AUROC of one class only) is never best. ``state_dict`` /
    ``load_state_dict`` carry it through checkpoints, so a resumed run reports the same adapter.

    Args:
        metric: the column of a validation row to maximise (``auroc`` or, in RL, ``reward``).
    """

    def __init__(self, metric: str = "auroc"):
        self.metric = metric
        self.row: dict[str, float] | None = None
        self.weights: dict[str, torch.Tensor] | None = None

    def offer(self, model: torch.nn.Module, row: dict[str, float]) -> bool:
        """Keep ``model``'s trainable weights when ``row`` has the best ``metric`` so far; returns whether it did."""
        value = row[self.metric]
        if not math.isfinite(value) or (self.row is not None and value <= self.row[self.metric]):
            return False
        self.row = dict(row)
        self.weights = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
        return True

    def restore(self, model: torch.nn.Module) -> dict[str, float] | None:
        """Load the best weights into ``model``; returns their row (None when nothing was validated: the model keeps
        its last weights)."""
        if self.weights is None:
            return None
        parameters = dict(model.named_parameters())
        with torch.no_grad():
            for name, weights in self.weights.items():
                parameters[name].copy_(weights)
        return self.row

    def state_dict(self) -> dict[str, Any]:
        return {"row": self.row, "weights": self.weights}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        state = state or {}
        self.row, self.weights = state.get("row"), state.get("weights")


class EpochValidation(L.Callback):
    """After every training epoch of an SFT run: :func:`validate_policy` on the validation patients, ``val/auroc``
    and ``val/auprc`` logged, and the adapter of the best epoch kept (:attr:`best`; :attr:`rows` one per epoch).

    Args:
        tokenizer: the policy's tokenizer.
        prompt_ids: each validation patient's chat prompt, ready for the assistant's turn.
        labels: ``(patients,)`` 0/1 outcomes.
        max_new_tokens: answer budget.
        method: the score (``token_expectation``, ``greedy`` or ``sample_mean``).
        batch_size: sequences decoded together.
    """

    def __init__(
        self,
        tokenizer,
        prompt_ids: Sequence[Sequence[int]],
        labels: np.ndarray,
        max_new_tokens: int,
        method: str,
        batch_size: int,
    ):
        self.tokenizer, self.prompt_ids, self.labels = tokenizer, list(prompt_ids), np.asarray(labels)
        self.max_new_tokens, self.method, self.batch_size = max_new_tokens, method, batch_size
        self.rows: list[dict[str, float]] = []
        self.best = BestAdapter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        model = pl_module.model
        model.eval()  # no dropout in the answers
        try:
            cache = PrefixCache(self.batch_size + 1)  # a batch's prompts and their shared start
            engine = GenerationEngine(model, self.tokenizer, self.batch_size, progress=False, prefix_cache=cache)
            row = {"epoch": float(trainer.current_epoch + 1)}
            row.update(
                validate_policy(
                    engine, self.prompt_ids, self.labels, max_new_tokens=self.max_new_tokens, method=self.method
                )
            )
        finally:
            model.train()
        self.rows.append(row)
        kept = self.best.offer(model, row)
        log.info(
            "validation after epoch %d: AUROC %.3f, AUPRC %.3f, parse failures %.0f %%%s",
            trainer.current_epoch + 1, row["auroc"], row["auprc"], 100 * row["parse_failure"],
            " (best so far)" if kept else "",
        )  # fmt: skip
        pl_module.log_dict({f"val/{key}": row[key] for key in ("auroc", "auprc", "parse_failure")}, batch_size=1)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "best": self.best.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])
        self.best.load_state_dict(state_dict["best"])
