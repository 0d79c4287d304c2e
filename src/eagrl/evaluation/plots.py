"""ROC and precision-recall curves as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import auc, precision_recall_curve, roc_curve


def roc_pr_plots(labels: np.ndarray, probabilities: np.ndarray, directory: Path, title: str = "") -> list[Path]:
    """Write ``roc.png`` and ``pr.png`` for (n,) 0/1 labels and (n,) probabilities; return their paths."""
    false_positive, true_positive, _ = roc_curve(labels, probabilities)
    precision, recall, _ = precision_recall_curve(labels, probabilities)
    prevalence = float(np.mean(labels))
    curves = {
        "roc.png": (false_positive, true_positive, ([0, 1], [0, 1]), "False positive rate", "True positive rate",
                    f"AUROC {auc(false_positive, true_positive):.3f}"),
        "pr.png": (recall, precision, ([0, 1], [prevalence, prevalence]), "Recall", "Precision",
                   f"AUPRC (trapezoid) {auc(recall, precision):.3f}"),
    }  # fmt: skip
    paths = []
    for name, (x, y, chance, x_label, y_label, legend) in curves.items():
        figure, axes = plt.subplots(figsize=(4, 4))
        axes.plot(x, y, label=legend)
        axes.plot(*chance, linestyle="--", color="grey", label="chance")
        axes.set(xlabel=x_label, ylabel=y_label, xlim=(0, 1), ylim=(0, 1.02), title=title)
        axes.title.set_fontsize(8)
        axes.legend(loc="lower right", fontsize=8)
        figure.tight_layout()
        figure.savefig(directory / name, dpi=120)
        plt.close(figure)
        paths.append(directory / name)
    return paths


#: panels of :func:`training_curves`: (history column, title); the validation panel comes last
CURVES = (
    ("reward", "reward R"),
    ("reward_cls", "R_cls"),
    ("reward_att", "R_att"),
    ("band_fraction", "adaptive-band token fraction"),
)


def training_curves(history: pd.DataFrame, validations: pd.DataFrame, path: Path, title: str = "") -> Path:
    """One PNG of an RL run against its step: the mean reward and its parts, the adaptive-band fraction (the
    ``history.csv`` columns of :data:`CURVES` that the run logged) and the validation AUROC / AUPRC and R_att of the
    greedy answers (``validation.csv``, when the run was validated)."""
    panels = [(column, name) for column, name in CURVES if column in history]
    figure, axes = plt.subplots(1, len(panels) + 1, figsize=(3.2 * (len(panels) + 1), 3))
    for axis, (column, name) in zip(axes, panels, strict=False):
        axis.plot(history["step"], history[column], marker=".")
        axis.set(xlabel="RL step", title=name)
    if len(validations):
        for metric, name in (("auroc", "AUROC"), ("auprc", "AUPRC"), ("reward_att", "R_att")):
            if metric in validations and validations[metric].notna().any():
                axes[-1].plot(validations["step"], validations[metric], marker="o", label=name)
        axes[-1].legend(fontsize=8)
    axes[-1].set(xlabel="RL steps done", title="validation", ylim=(0, 1.02))
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
