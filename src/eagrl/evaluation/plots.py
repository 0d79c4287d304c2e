"""ROC and precision-recall curves as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
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
