"""The evaluate stage (``eagrl-evaluate``): an LLM answers every patient of a split, then bootstrap AUROC / AUPRC.

Artifacts go to ``<paths.artifact_dir>/evaluate/<dataset>/<task>/<backbone>/<method>/<split>-<config hash>/``:
``answers.jsonl`` (raw generations, appended per batch: a killed run resumes without redoing answered
patients; with ``score.method=token_expectation`` each also keeps its digit distributions, read off its own
decoding or computed by the pass while its batch's prompts are cached, :func:`~eagrl.policy.scoring.batch_digits`),
``predictions.parquet`` (patient
id, label, ŷ by the configured ``score``, parse status, declared features, the features the prompt showed with a
value, raw text), ``metrics.json`` (bootstrap AUROC / AUPRC of that ŷ, the ``score`` used, parse-failure rate,
tokens/s) and ``roc.png`` / ``pr.png``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from eagrl.errors import ConfigError
from eagrl.policy.backbone import adapter_digest, adapter_info, check_trained_prompt
from eagrl.stages.runtime import prepared_datamodule, start
from eagrl.utils.artifacts import StageArtifact, report

log = logging.getLogger(__name__)

ANSWERS = "answers.jsonl"
#: the key of an answer row holding its :class:`~eagrl.policy.scoring.AnswerDigits` (None: another score, or an
#: answer saved before they were kept, whose pass runs at scoring)
ANSWER_DIGITS = "answer_digits"


def method_name(cfg: DictConfig) -> str:
    """``<prompt style>`` for the base model; for an adapter, the method recorded with it (``sft-trajectory``;
    ``rl-eagrl@physionet2012`` when it was trained on another dataset) or ``adapter-<folder name>``."""
    if not cfg.adapter:
        return cfg.prompt.style
    info = adapter_info(cfg.adapter)
    method = info.get("method") or f"adapter-{Path(cfg.adapter).name}"
    trained_on = info.get("dataset")
    return f"{method}@{trained_on}" if trained_on and trained_on != cfg.dataset.name else method


def artifact(cfg: DictConfig) -> StageArtifact:
    """Where this config's predictions live (an adapter's weights enter the hash: answers of an adapter retrained in
    place are not reused)."""
    inputs = {"adapter": adapter_digest(cfg.adapter)} if cfg.adapter else None
    return StageArtifact.of(
        cfg, "evaluate", cfg.backbone.name, method_name(cfg), name=f"{cfg.split}-{{hash}}", inputs=inputs
    )


def read_answers(path: Path) -> dict[str, dict]:
    """Answers saved by an earlier (possibly killed) run; a torn last line is dropped and logged."""
    answers: dict[str, dict] = {}
    if not path.is_file():
        return answers
    torn = 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
            answers[row["patient_id"]] = row
        except (json.JSONDecodeError, KeyError, TypeError):
            torn += 1
    if torn:
        log.warning("%s: %d unreadable line(s) skipped (a killed write); those patients are answered again", path, torn)
    return answers


def append_answers(path: Path, rows: list[dict]) -> None:
    """Append answers and flush them to disk before the next batch starts."""
    with path.open("a") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def run(cfg: DictConfig) -> dict:
    """Answer, parse, score and plot (or only report a finished evaluation); return the metrics."""
    from eagrl.evaluation.metrics import bootstrap_metrics
    from eagrl.evaluation.plots import roc_pr_plots
    from eagrl.policy.backbone import load_adapter, load_backbone
    from eagrl.policy.engine import GenerationEngine, PrefixCache, SamplingConfig
    from eagrl.policy.guided import answer_grammar
    from eagrl.policy.parsing import FeatureVocabulary, ParseCounter, parse_answer
    from eagrl.policy.scoring import DigitsPerBatch, check_score, digit_token_ids, score_answers

    threads = start(cfg, seed=False)
    check_score(**cfg.score)
    stage = artifact(cfg)
    target = stage.folder
    if (metrics := stage.finished("already evaluated")) is not None:
        _finish(metrics, target, cfg)
        return metrics
    stage.create()
    if cfg.overwrite:
        (target / ANSWERS).unlink(missing_ok=True)

    datamodule = prepared_datamodule(cfg)
    records, prompts = datamodule.patients(cfg.split, cfg.task, cfg.prompt, cfg.max_patients)

    backbone = load_backbone(cfg.backbone)
    model = load_adapter(backbone.model, cfg.adapter) if cfg.adapter else backbone.model
    check_trained_prompt(cfg.adapter, cfg.prompt)
    external = _external_cohort(cfg, datamodule, len(records))
    # the digits whose distributions each decoding step records, for token_expectation to read off the answer; the
    # other answers of a batch take the pass while the batch's prompts are still in the prefix cache (which also
    # holds the prompts' shared start)
    watch = digit_token_ids(backbone.tokenizer) if cfg.score.method == "token_expectation" else []
    batch_size = cfg.generation.batch_size
    engine = GenerationEngine(model, backbone.tokenizer, batch_size, prefix_cache=PrefixCache(batch_size + 1))
    prompt_ids = engine.encode_chat([prompt.messages() for prompt in prompts])

    answers = read_answers(target / ANSWERS)
    pending = [index for index, record in enumerate(records) if record.patient_id not in answers]
    if answers:
        log.info("resuming: %d of %d patients already answered", len(records) - len(pending), len(records))
    sampling = SamplingConfig(
        max_new_tokens=cfg.generation.max_new_tokens,
        temperature=cfg.generation.temperature,
        top_p=cfg.generation.top_p,
        top_k=cfg.generation.top_k,
        stop_strings=tuple(cfg.generation.stop_strings),
        seed=cfg.seed,
    )

    digits = DigitsPerBatch(engine, [prompt_ids[index] for index in pending], watch) if watch else None

    def save(batch: list[int], results: list) -> None:
        if digits:
            digits(batch, results)
        rows = [
            {
                "patient_id": records[pending[slot]].patient_id,
                "text": result[0].text,
                "generated_tokens": len(result[0].token_ids),
                "prompt_tokens": result[0].prompt_tokens,
                "finish_reason": result[0].finish_reason,
                ANSWER_DIGITS: digits.reads[slot] if digits else None,
            }
            for slot, result in zip(batch, results, strict=True)
        ]
        append_answers(target / ANSWERS, rows)
        answers.update({row["patient_id"]: row for row in rows})

    grammars = (
        [answer_grammar(prompt.observed_features, cfg.generation.guided_features) for prompt in prompts]
        if cfg.generation.guided
        else None
    )
    started = time.perf_counter()
    engine.generate(
        [prompt_ids[index] for index in pending],
        sampling,
        keys=[records[index].patient_id for index in pending],
        on_batch=save,
        grammars=[grammars[index] for index in pending] if grammars else None,
        watch=watch,
        keep_prompts=bool(watch),
    )
    seconds = time.perf_counter() - started
    stats = engine.stats

    scores, scoring = score_answers(
        engine,
        prompt_ids,
        [answers[record.patient_id]["text"] for record in records],
        **cfg.score,
        sampling=sampling,
        keys=[record.patient_id for record in records],
        fallback=cfg.parsing.fallback_probability,
        grammars=grammars,
        generated=[_answer_digits(answers[record.patient_id]) for record in records],
    )
    vocabulary = FeatureVocabulary(datamodule.features)
    counter = ParseCounter()
    rows = []
    for index, record in enumerate(records):
        answer = {key: value for key, value in answers[record.patient_id].items() if key != ANSWER_DIGITS}
        parsed = parse_answer(answer["text"], vocabulary)
        counter.add(parsed)
        rows.append(
            {
                "patient_id": record.patient_id,
                "label": record.label,
                "probability": scores[index],
                "score": scoring.method,
                **{name: values[index] for name, values in scoring.columns.items()},
                "parsed_probability": parsed.probability,
                "parse_status": parsed.status,
                "features": list(parsed.features),
                "unknown_features": list(parsed.unknown_features),
                # what a C_exp can be drawn from (eagrl.experts.salient.salient_features)
                "observed_features": list(prompts[index].observed_features),
                **answer,
            }
        )
    predictions = pd.DataFrame(rows)
    predictions.to_parquet(target / "predictions.parquet", index=False)
    labels, probabilities = predictions["label"].to_numpy(), predictions["probability"].to_numpy()
    if len(set(labels.tolist())) < 2:
        raise ConfigError(
            f"the {len(labels)} evaluated {cfg.split} patients hold one outcome only, so AUROC is undefined; "
            f"answers are kept in {target / 'predictions.parquet'}; raise max_patients or evaluate another split"
        )
    metrics = {
        "dataset": cfg.dataset.name,
        "task": cfg.task.name,
        "backbone": cfg.backbone.name,
        "method": method_name(cfg),
        "seed": cfg.seed,
        "split": cfg.split,
        "shuffle_fraction": cfg.prompt.shuffle_fraction,
        "shuffle_seed": cfg.prompt.shuffle_seed,
        **external,
        "score": scoring.method,
        "scoring": scoring.counts,
        cfg.split: bootstrap_metrics(labels, probabilities, cfg.evaluation.resamples, cfg.evaluation.seed),
        "parsing": counter.summary(),
        "generation": {
            "patients_answered_this_run": len(pending),
            "seconds_this_run": seconds,
            "prompt_tokens": stats.prompt_tokens,
            "generated_tokens": stats.generated_tokens,
            "prefill_seconds": stats.prefill_seconds,
            "decode_seconds": stats.decode_seconds,
            "generated_tokens_per_second": stats.tokens_per_second,
            "finish_reasons": stats.finish_reasons,
            "mean_prompt_tokens": float(predictions["prompt_tokens"].mean()),
            "mean_generated_tokens": float(predictions["generated_tokens"].mean()),
            "threads": threads,
            "dtype": str(backbone.model.dtype),
        },
        "artifact_dir": str(target),
    }
    roc_pr_plots(
        labels, probabilities, target, title=f"{metrics['backbone']} {metrics['method']} on {cfg.dataset.name}"
    )
    stage.seal(metrics)
    _finish(metrics, target, cfg)
    return metrics


def _answer_digits(answer: dict):
    """The :class:`~eagrl.policy.scoring.AnswerDigits` saved with an answer, or None (not recorded, or not readable
    off the answer)."""
    from eagrl.policy.scoring import AnswerDigits

    saved = answer.get(ANSWER_DIGITS)
    return AnswerDigits(*saved) if saved else None


def _external_cohort(cfg: DictConfig, datamodule, patients: int) -> dict:
    """What metrics.json records about the cohort an adapter is scored on: the dataset the adapter was trained on
    (``trained_on``; another one makes this an external validation, logged) and the features the cohort's files
    do not hold (``absent_features``: never measured, shown as missing in every prompt)."""
    trained_on = adapter_info(cfg.adapter).get("dataset")
    absent = datamodule.cohort.manifest.get("absent_features", [])
    if trained_on and trained_on != cfg.dataset.name:
        log.info(
            "external cohort: an adapter trained on %s answers %d %s patients of %s (%d features never measured%s)",
            trained_on, patients, cfg.split, cfg.dataset.name, len(absent), f": {', '.join(absent)}" if absent else "",
        )  # fmt: skip
    trained_task = adapter_info(cfg.adapter).get("task")
    if trained_task and trained_task != cfg.task.name:
        log.warning("the adapter was trained for task %s, this run asks about %s", trained_task, cfg.task.name)
    return {"trained_on": trained_on, "absent_features": absent}


def _finish(metrics: dict, target: Path, cfg: DictConfig) -> None:
    """Report the run: its metrics into the run directory and one summary line."""
    from eagrl.evaluation.metrics import format_scores

    report(
        cfg,
        metrics,
        f"{metrics['backbone']} {metrics['method']} on {metrics['dataset']}/{metrics['task']} {metrics['split']} "
        f"(score {metrics.get('score', 'greedy')}): {format_scores(metrics[metrics['split']])}, "
        f"parse failures {100 * metrics['parsing']['parse_failure_rate']:.1f} % "
        f"({metrics['generation']['seconds_this_run']:.0f} s) -> {target}",
    )
