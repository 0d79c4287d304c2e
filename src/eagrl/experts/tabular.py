"""Reference models clinicians expect beside the deep experts: logistic regression and gradient-boosted trees
(scikit-learn) on the same last-visit inputs and the same splits.

Each patient is one row: the static features and the dynamic features at the last visit, exactly as the deep
experts read them there (LOCF, the train median where nothing was observed yet, z-normalised with train
statistics; :class:`~eagrl.data.datamodule.SplitArrays`). A small grid of each model's main setting is fit on the
train split and the setting with the best validation AUPRC (the experts' ``train.monitor``) is kept; the test split
is scored with the same bootstrap as the experts.

    python experiments/tabular_baselines.py --benchmarks BENCHMARKS.md
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from eagrl.data.datamodule import SplitArrays
from eagrl.errors import ConfigError
from eagrl.evaluation.metrics import bootstrap_metrics, point_metrics


def last_visit_features(arrays: SplitArrays) -> np.ndarray:
    """(n, S + F): static features, then the dynamic features at each patient's last visit (normalised)."""
    last = arrays.values[np.arange(len(arrays.lengths)), arrays.lengths - 1]
    return np.concatenate([arrays.static, last], axis=1).astype(np.float64)


@dataclass(frozen=True)
class TabularModel:
    """A scikit-learn classifier family and the grid its setting is chosen from on the validation split.

    Attributes:
        build: ``(setting, seed) -> unfitted classifier``.
        grid: the settings tried.
        setting_name: what the setting is (recorded with the result).
        parameters: ``fitted classifier -> number of fitted values`` (coefficients, or tree nodes).
    """

    build: Callable[[float, int], object]
    grid: tuple
    setting_name: str
    parameters: Callable[[object], int]


#: the reference models, by name
MODELS: dict[str, TabularModel] = {
    # L2-regularised logistic regression; the setting is the inverse regularisation strength C
    "logistic_regression": TabularModel(
        build=lambda c, seed: LogisticRegression(C=c, max_iter=5000, random_state=seed),
        grid=(0.01, 0.1, 1.0, 10.0),
        setting_name="C",
        parameters=lambda model: int(model.coef_.size + model.intercept_.size),
    ),
    # histogram gradient-boosted trees (LightGBM's algorithm in scikit-learn); the setting is the number of trees,
    # the other settings are scikit-learn's defaults (learning rate 0.1, 31 leaves) with 80 % of the features per split
    "gradient_boosting": TabularModel(
        build=lambda trees, seed: HistGradientBoostingClassifier(
            max_iter=int(trees), max_features=0.8, early_stopping=False, random_state=seed
        ),
        grid=(25, 50, 100, 200),
        setting_name="trees",
        parameters=lambda model: int(sum(tree[0].nodes.size for tree in model._predictors)),
    ),
}


def fit_tabular(
    name: str, arrays: dict[str, SplitArrays], seed: int, resamples: int = 100, bootstrap_seed: int = 42
) -> dict:
    """Fit the reference model ``name`` on the train split, choose its setting on val, score test.

    Args:
        name: a key of :data:`MODELS`.
        arrays: ``train``, ``val`` and ``test`` arrays of one cohort and task (the datamodule's).
        seed: seed of the model's randomness (the feature subsampling of the trees).
        resamples, bootstrap_seed: the test bootstrap (``evaluation.*`` of the experts).

    Returns:
        Metrics shaped like an expert's (``test`` bootstrap, ``best_val``), plus the chosen setting, the fit time
        and the parameter count.
    """
    if name not in MODELS:
        raise ConfigError(f"unknown reference model {name!r}; available: {', '.join(MODELS)}")
    model_def = MODELS[name]
    inputs = {split: last_visit_features(arrays[split]) for split in ("train", "val", "test")}
    labels = {split: arrays[split].labels for split in ("train", "val", "test")}
    started = time.perf_counter()
    best = None
    for setting in model_def.grid:
        model = model_def.build(setting, seed).fit(inputs["train"], labels["train"])
        val = point_metrics(labels["val"], model.predict_proba(inputs["val"])[:, 1])["auprc"]
        if best is None or val > best[0]:
            best = (val, setting, model)
    seconds = time.perf_counter() - started
    val_auprc, setting, model = best
    probabilities = model.predict_proba(inputs["test"])[:, 1]
    return {
        "expert": name,
        "seed": seed,
        "test": bootstrap_metrics(labels["test"], probabilities, resamples, bootstrap_seed),
        "best_val": float(val_auprc),
        model_def.setting_name: setting,
        "seconds_to_fit": seconds,
        "parameters": model_def.parameters(model),
        "inputs": inputs["test"].shape[1],
        "probabilities": probabilities,
    }
