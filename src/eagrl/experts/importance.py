"""Per-patient feature importance of a trained expert, and the salient set C_exp that guides the LLM.

``native``: the model's own mechanism (ConCare's final feature attention, AdaCare's recalibration weights,
RETAIN's variable contributions). ``integrated_gradients``: captum's IntegratedGradients on the z-normalised
inputs against the all-zero baseline (the train mean), absolute attributions summed over real visits.
Either way each row is normalised to sum to 1 over the S + F features (static first, then dynamic).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import torch
from captum.attr import IntegratedGradients

from eagrl.errors import ConfigError
from eagrl.experts.base import ExpertNet, net_inputs

log = logging.getLogger(__name__)

METHODS = ("native", "integrated_gradients", "auto")
#: seconds between the log lines that report the progress of :func:`export_importance`
PROGRESS_LOG_SECONDS = 30.0


def integrated_gradients(net: ExpertNet, batch: dict[str, torch.Tensor], steps: int = 32) -> torch.Tensor:
    """|IG| attributions of the logit to each feature: (B, S + F)."""
    explainer = IntegratedGradients(lambda values, static, mask, times: net(values, static, mask, times))
    values, static = batch["values"].float(), batch["static"].float()
    with torch.enable_grad():
        attribution_values, attribution_static = explainer.attribute(
            (values, static),
            baselines=(torch.zeros_like(values), torch.zeros_like(static)),
            additional_forward_args=(batch["visit_mask"], batch["times"]),
            n_steps=steps,
            internal_batch_size=len(values) * 8,
        )
    per_visit = attribution_values.abs() * batch["visit_mask"].unsqueeze(-1)
    return torch.cat([attribution_static.abs(), per_visit.sum(dim=1)], dim=1)


def feature_importance(
    net: ExpertNet, batch: dict[str, torch.Tensor], method: str = "auto", steps: int = 32
) -> torch.Tensor:
    """Importance of each feature for each patient, rows summing to 1: (B, S + F).

    Args:
        net: a trained expert (put in eval mode by the caller).
        batch: an EHRDataModule batch.
        method: ``native``, ``integrated_gradients``, or ``auto`` (native where the model has it).
        steps: integration steps for integrated gradients.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown importance method {method!r} (expert.importance); choose from {METHODS}")
    if method == "native" and not net.has_native_importance:
        raise ConfigError(f"{net.name} has no native importance; set expert.importance=integrated_gradients")
    if method == "integrated_gradients" or (method == "auto" and not net.has_native_importance):
        scores = integrated_gradients(net, batch, steps)
    else:
        with torch.no_grad():
            scores = net.native_importance(*net_inputs(batch))
    scores = scores.detach().clamp(min=0)
    return scores / scores.sum(dim=1, keepdim=True).clamp(min=1e-12)


def top_k_features(importance: np.ndarray, names: list[str], k: int) -> list[list[str]]:
    """Names of the k most important features per patient, most important first. ``importance``: (n, S + F)."""
    order = np.argsort(-importance, axis=1, kind="stable")[:, :k]
    return [[names[i] for i in row] for row in order]


def export_importance(
    module, datamodule, method: str, ig_steps: int, top_k: int, splits: tuple[str, ...] = ("train", "val", "test")
) -> pd.DataFrame:
    """Probabilities and feature importance (``method``, see :mod:`eagrl.experts.importance`) for every patient of
    ``splits``. Shows a progress bar on a terminal and logs the progress every :data:`PROGRESS_LOG_SECONDS`."""
    from tqdm.auto import tqdm

    names = datamodule.features.static_names + datamodule.features.dynamic_names
    module.eval()
    sizes = {split: len(datamodule.arrays[split].patient_ids) for split in splits}
    total, done = sum(sizes.values()), 0
    resolved = method if method != "auto" else "native" if module.net.has_native_importance else "integrated_gradients"
    log.info(
        "exporting %s importance for %d patients (%s)",
        resolved,
        total,
        ", ".join(f"{split} {size}" for split, size in sizes.items()),
    )
    started = last_log = time.monotonic()
    frames = []
    with tqdm(total=total, desc="importance", unit="patient", disable=None, leave=False) as bar:
        for split in splits:
            probabilities, importances = [], []
            for batch in datamodule.dataloader(split):
                with torch.no_grad():
                    probabilities.append(torch.sigmoid(module(batch)).numpy())
                importances.append(feature_importance(module.net, batch, method, ig_steps).numpy())
                done += len(batch["label"])
                bar.update(len(batch["label"]))
                if time.monotonic() - last_log >= PROGRESS_LOG_SECONDS:
                    last_log, elapsed = time.monotonic(), time.monotonic() - started
                    log.info(
                        "importance: %d of %d patients (%.0f %%), %.0f s, about %.0f s left",
                        done, total, 100 * done / total, elapsed, elapsed * (total - done) / done,
                    )  # fmt: skip
            arrays = datamodule.arrays[split]
            importance = np.concatenate(importances) if importances else np.zeros((0, len(names)), np.float32)
            ranking = top_k_features(importance, names, len(names))
            frames.append(
                pd.DataFrame(
                    {
                        "patient_id": arrays.patient_ids,
                        "split": split,
                        "label": arrays.labels,
                        "probability": np.concatenate(probabilities) if probabilities else np.zeros(0, np.float32),
                        "importance": list(importance),
                        "ranking": ranking,
                        "top_k": [row[:top_k] for row in ranking],
                    }
                )
            )
    log.info("importance exported for %d patients in %.0f s", total, time.monotonic() - started)
    return pd.concat(frames, ignore_index=True)
