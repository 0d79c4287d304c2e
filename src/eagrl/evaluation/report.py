"""``report.md`` of a pipeline run (test split): the results table with each method's declared-feature agreement with
the expert, paired bootstrap CIs of the RL policy's differences from every other method, ROC / PR curves, the RL
training curves, and the features the policy declares beside the expert's salient features (counts and a few
patients).

    write_report(run_dir, evaluations={"base / pqd": metrics, ...}, expert=expert_metrics, rl=rl_metrics,
                 title="...", rl_evaluation=evaluations["smollm2_135m / eagrl"], top_k=5)
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

from eagrl.evaluation.metrics import metric_of, paired_difference
from eagrl.experts.salient import salient_features
from eagrl.rewards import jaccard

#: bootstrap resamples of the paired differences
RESAMPLES = 1000
#: test patients of each outcome shown with their declared and expert features
EXAMPLES_PER_OUTCOME = 3


def _scores(metrics: dict) -> tuple[str, str]:
    scores = metrics[metrics.get("split", "test")]
    return tuple(f"{100 * scores[name]['mean']:.1f} ± {100 * scores[name]['std']:.1f}" for name in ("auroc", "auprc"))


def results_table(evaluations: dict[str, dict], expert: dict | None, agreement: dict[str, float]) -> str:
    """Markdown: one row per evaluated method (and the expert), ×100 bootstrap mean ± std, and the mean Jaccard of
    each patient's declared features with that patient's C_exp (``agreement``: method -> value; – when absent)."""
    lines = [
        "| method | AUROC | AUPRC | declared vs C_exp (Jaccard) | parse failures | PQD format | answer tokens | "
        "wall time |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    if expert:
        auroc, auprc = _scores(expert)
        lines.append(f"| expert {expert['expert']} | {auroc} | {auprc} | – | – | – | – | – |")
    for name, metrics in evaluations.items():
        auroc, auprc = _scores(metrics)
        parsing, generation = metrics["parsing"], metrics["generation"]
        overlap = f"{agreement[name]:.3f}" if name in agreement else "–"
        lines.append(
            f"| {name} | {auroc} | {auprc} | {overlap} | {100 * parsing['parse_failure_rate']:.1f} % | "
            f"{100 * parsing.get('pqd_format_rate', float('nan')):.1f} % | {generation['mean_generated_tokens']:.0f} | "
            f"{generation['seconds_this_run']:.0f} s |"
        )
    return "\n".join(lines)


def read_predictions(metrics: dict) -> pd.DataFrame:
    """An evaluation's ``predictions.parquet``, indexed and sorted by patient id."""
    frame = pd.read_parquet(Path(metrics["artifact_dir"]) / "predictions.parquet")
    return frame.set_index("patient_id").sort_index()


def expert_sets(predictions: pd.DataFrame, importance: pd.DataFrame, top_k: int) -> pd.Series:
    """Each patient's C_exp as R_att reads it: the expert's top ``top_k`` among the features the prompt showed with a
    value. When some predictions were written before they recorded ``observed_features``, every patient gets the
    expert's own top-k over all features (``importance.parquet``'s ``top_k``).

    Args:
        predictions: indexed by patient id (:func:`read_predictions`).
        importance: the expert's ``importance.parquet`` indexed by patient id (``ranking``, ``top_k``).
        top_k: size of C_exp.
    """
    if "observed_features" not in predictions or predictions["observed_features"].isna().any():
        return importance.loc[predictions.index, "top_k"].map(list)
    return pd.Series(
        [
            salient_features(importance.at[patient, "ranking"], shown, top_k)
            for patient, shown in predictions["observed_features"].items()
        ],
        index=predictions.index,
    )


def agreement_of(predictions: pd.DataFrame, sets: pd.Series) -> np.ndarray:
    """(patients,) Jaccard of each patient's declared features with that patient's C_exp."""
    return np.array(
        [jaccard(list(predictions.at[patient, "features"]), sets[patient]) for patient in predictions.index]
    )


def differences(frames: dict[str, pd.DataFrame], reference: str, sets: pd.Series | None) -> str:
    """Markdown: ``reference`` − every other method on the patients both answered, AUROC / AUPRC (points) and, with
    ``sets``, the declared-feature Jaccard, each with a paired bootstrap 95 % CI."""
    header = "| difference | AUROC (points) | AUPRC (points) |" + (
        " Jaccard(declared, C_exp) |" if sets is not None else ""
    )
    lines = [header, "|---|---|---|" + ("---|" if sets is not None else "")]
    for name, frame in frames.items():
        if name == reference:
            continue
        patients = frames[reference].index.intersection(frame.index)
        first, second = frames[reference].loc[patients], frame.loc[patients]
        cells = []
        for metric in ("auroc", "auprc"):
            result = paired_difference([first], [second], metric_of(metric), RESAMPLES)
            cells.append(
                f"{100 * result['difference']:+.1f} [{100 * result['ci_low']:+.1f}, {100 * result['ci_high']:+.1f}]"
            )
        if sets is not None:
            overlap = {key: agreement_of(value, sets) for key, value in (("first", first), ("second", second))}
            result = paired_difference(
                [first.assign(agreement=overlap["first"])], [second.assign(agreement=overlap["second"])],
                lambda frame, rows: frame["agreement"].to_numpy()[rows].mean(), RESAMPLES,
            )  # fmt: skip
            cells.append(f"{result['difference']:+.3f} [{result['ci_low']:+.3f}, {result['ci_high']:+.3f}]")
        lines.append(f"| {reference} − {name} ({len(patients)} patients) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def patient_examples(predictions: pd.DataFrame, sets: pd.Series, count: int = EXAMPLES_PER_OUTCOME) -> str:
    """Markdown: the first ``count`` test patients of each outcome (by patient id) with the policy's ŷ, its declared
    features, the expert's C_exp and their Jaccard."""
    lines = [
        "| patient | outcome | ŷ | declared by the policy | expert C_exp | Jaccard |",
        "|---|---:|---:|---|---|---:|",
    ]
    for outcome in (1, 0):
        for patient, row in predictions[predictions["label"] == outcome].head(count).iterrows():
            declared = list(row["features"])
            lines.append(
                f"| {patient} | {outcome} | {row['probability']:.2f} | {'; '.join(declared) or '(none)'} | "
                f"{'; '.join(sets[patient])} | {jaccard(declared, sets[patient]):.2f} |"
            )
    return "\n".join(lines)


def curves(evaluations: dict[str, dict], expert: dict | None, directory: Path) -> list[Path]:
    """``roc.png`` and ``pr.png`` with one curve per method (from each run's predictions)."""
    series = {}
    if expert:
        frame = pd.read_parquet(
            Path(expert["artifact_dir"]) / "importance.parquet", columns=["split", "label", "probability"]
        )
        test = frame[frame["split"] == "test"]
        series[f"expert {expert['expert']}"] = (test["label"].to_numpy(), test["probability"].to_numpy())
    for name, metrics in evaluations.items():
        frame = read_predictions(metrics)
        series[name] = (frame["label"].to_numpy(), frame["probability"].to_numpy())
    paths = []
    for file_name, curve, labels in (
        ("roc.png", lambda y, p: roc_curve(y, p)[:2], ("False positive rate", "True positive rate")),
        ("pr.png", lambda y, p: precision_recall_curve(y, p)[1::-1], ("Recall", "Precision")),
    ):
        figure, axes = plt.subplots(figsize=(5, 4))
        for name, (y, p) in series.items():
            x_values, y_values = curve(y, p)
            axes.plot(x_values, y_values, label=name)
        axes.set(xlabel=labels[0], ylabel=labels[1], xlim=(0, 1), ylim=(0, 1.02))
        axes.legend(loc="lower right", fontsize=7)
        figure.tight_layout()
        figure.savefig(directory / file_name, dpi=120)
        plt.close(figure)
        paths.append(directory / file_name)
    return paths


def top_features(predictions: pd.DataFrame, sets: pd.Series, count: int = 10) -> str:
    """Markdown: the features the policy declares most often on the test split beside the features most often in
    the patients' C_exp (counts of patients)."""
    declared = Counter(name for names in predictions["features"] for name in names)
    salient = Counter(name for names in sets for name in names)
    policy_rows, expert_rows = declared.most_common(count), salient.most_common(count)
    lines = [
        "| rank | declared by the policy | patients | expert salient (C_exp) | patients |",
        "|---:|---|---:|---|---:|",
    ]
    for rank in range(max(len(policy_rows), len(expert_rows))):
        left = policy_rows[rank] if rank < len(policy_rows) else ("", "")
        right = expert_rows[rank] if rank < len(expert_rows) else ("", "")
        lines.append(f"| {rank + 1} | {left[0]} | {left[1]} | {right[0]} | {right[1]} |")
    if not declared:
        lines += ["", f"The policy named no feature of the dataset in any of its {len(predictions)} test answers."]
    return "\n".join(lines)


def read_history(path: Path) -> pd.DataFrame:
    """An RL run's per-step history; empty when the file is missing or the run took no step (w/o Stage 2)."""
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()


def write_report(
    run_dir: Path,
    evaluations: dict[str, dict],
    expert: dict | None,
    rl: dict | None,
    title: str,
    rl_evaluation: dict | None = None,
    top_k: int = 5,
) -> Path:
    """Write ``report.md`` (and its figures) into ``run_dir``; return its path.

    Args:
        run_dir: where the report and its PNGs go.
        evaluations: table row name -> eagrl-evaluate metrics.
        expert: eagrl-expert metrics (a row, a curve and the patients' C_exp), or None.
        rl: eagrl-rl metrics (its training curves), or None.
        title: the report's heading.
        rl_evaluation: the RL policy's eagrl-evaluate metrics (one of ``evaluations``: the reference of the paired
            differences, its declared features vs the expert's), or None.
        top_k: size of C_exp (``salient.top_k``).
    """
    frames = {name: read_predictions(metrics) for name, metrics in evaluations.items()}
    sets = None
    if expert is not None and frames:
        importance = pd.read_parquet(Path(expert["artifact_dir"]) / "importance.parquet").set_index("patient_id")
        patients = pd.concat(frames.values())
        sets = expert_sets(patients[~patients.index.duplicated()], importance, top_k)
    agreement = (
        {name: float(agreement_of(frame, sets).mean()) for name, frame in frames.items()} if sets is not None else {}
    )
    sections = [f"# {title}", "", "## Test results (×100, mean ± std over 100 bootstrap resamples)", "",
                results_table(evaluations, expert, agreement), ""]  # fmt: skip
    reference = next((name for name, metrics in evaluations.items() if metrics is rl_evaluation), None)
    if reference is not None and len(frames) > 1:
        sections += [f"## {reference} against the other methods (paired bootstrap, {RESAMPLES:,} resamples of the "
                     "same test patients, 95 % CI)", "", differences(frames, reference, sets), ""]  # fmt: skip
    if evaluations or expert:
        curves(evaluations, expert, run_dir)
        sections += ["## ROC and precision–recall curves", "", "![ROC](roc.png) ![PR](pr.png)", ""]
    if rl is not None:
        history = read_history(Path(rl["artifact_dir"]) / "history.csv")
        if len(history):
            shutil.copyfile(Path(rl["artifact_dir"]) / "curves.png", run_dir / "rl_curves.png")
            sections += [f"## RL ({rl['method']}, {len(history)} steps): training and validation curves", "",
                         "![RL curves](rl_curves.png)", ""]  # fmt: skip
    if reference is not None and sets is not None:
        sections += ["## Features the RL policy declares vs the expert's salient features (test)", "",
                     top_features(frames[reference], sets), "",
                     patient_examples(frames[reference], sets), ""]  # fmt: skip
    path = run_dir / "report.md"
    path.write_text("\n".join(sections))
    return path
