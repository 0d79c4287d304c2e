"""``report.md`` of a pipeline run: the results table, ROC / PR curves of every method, the RL reward curve and
the features the policy declares beside the expert's salient features (test split).

    write_report(run_dir, evaluations={"base / pqd": metrics, ...}, expert=expert_metrics, rl=rl_metrics)
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve


def _scores(metrics: dict) -> tuple[str, str]:
    scores = metrics[metrics.get("split", "test")]
    return tuple(f"{100 * scores[name]['mean']:.1f} ± {100 * scores[name]['std']:.1f}" for name in ("auroc", "auprc"))


def results_table(evaluations: dict[str, dict], expert: dict | None) -> str:
    """Markdown: one row per evaluated method (and the expert), ×100 bootstrap mean ± std."""
    lines = [
        "| method | AUROC | AUPRC | parse failures | PQD format | answer tokens | wall time |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    if expert:
        auroc, auprc = _scores(expert)
        lines.append(f"| expert {expert['expert']} | {auroc} | {auprc} | – | – | – | – |")
    for name, metrics in evaluations.items():
        auroc, auprc = _scores(metrics)
        parsing, generation = metrics["parsing"], metrics["generation"]
        lines.append(
            f"| {name} | {auroc} | {auprc} | {100 * parsing['parse_failure_rate']:.1f} % | "
            f"{100 * parsing.get('pqd_format_rate', float('nan')):.1f} % | {generation['mean_generated_tokens']:.0f} | "
            f"{generation['seconds_this_run']:.0f} s |"
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
        frame = pd.read_parquet(Path(metrics["artifact_dir"]) / "predictions.parquet", columns=["label", "probability"])
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


def reward_curve(history: pd.DataFrame, path: Path) -> Path:
    """The RL run's mean reward and accuracy per step."""
    figure, axes = plt.subplots(figsize=(5, 3))
    axes.plot(history["step"], history["reward"], label="mean reward R")
    axes.set(xlabel="RL step", ylabel="reward")
    twin = axes.twinx()
    twin.plot(history["step"], history["accuracy"], color="tab:orange", label="accuracy")
    twin.set(ylabel="accuracy", ylim=(0, 1))
    figure.legend(loc="lower right", fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def top_features(predictions: pd.DataFrame, importance: pd.DataFrame, count: int = 10) -> str:
    """Markdown: the features the policy declares most often on the test split beside the expert's most frequent
    salient features there (counts of patients)."""
    declared = Counter(name for names in predictions["features"] for name in names)
    test = importance[importance["split"] == "test"]
    salient = Counter(name for names in test["top_k"] for name in names)
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
) -> Path:
    """Write ``report.md`` (and its figures) into ``run_dir``; return its path.

    Args:
        run_dir: where the report and its PNGs go.
        evaluations: table row name -> eagrl-evaluate metrics.
        expert: eagrl-expert metrics (a row and a curve), or None.
        rl: eagrl-rl metrics (its reward curve), or None.
        title: the report's heading.
        rl_evaluation: the RL policy's eagrl-evaluate metrics (its declared features vs the expert's), or None.
    """
    sections = [f"# {title}", "", "## Test results (×100, mean ± std over 100 bootstrap resamples)", "",
                results_table(evaluations, expert), ""]  # fmt: skip
    if evaluations or expert:
        curves(evaluations, expert, run_dir)
        sections += ["## ROC and precision–recall curves", "", "![ROC](roc.png) ![PR](pr.png)", ""]
    if rl is not None:
        history = read_history(Path(rl["artifact_dir"]) / "history.csv")
        if len(history):
            reward_curve(history, run_dir / "reward.png")
            sections += [f"## RL ({rl['method']}, {len(history)} steps)", "", "![reward](reward.png)", ""]
        if rl_evaluation is not None and expert is not None:
            predictions = pd.read_parquet(
                Path(rl_evaluation["artifact_dir"]) / "predictions.parquet", columns=["features"]
            )
            importance = pd.read_parquet(
                Path(expert["artifact_dir"]) / "importance.parquet", columns=["split", "top_k"]
            )
            sections += ["## Features the RL policy declares vs the expert's salient features (test)", "",
                         top_features(predictions, importance), ""]  # fmt: skip
    path = run_dir / "report.md"
    path.write_text("\n".join(sections))
    return path
