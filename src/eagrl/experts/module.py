"""``ExpertModule``: one LightningModule that trains, evaluates and explains any registered expert network.

Loss: binary cross-entropy on the logit at the last visit. Metrics: torchmetrics AUROC / AUPRC per split,
logged as ``train/…``, ``val/…``, ``test/…`` (epoch level).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision

from eagrl.errors import ConfigError
from eagrl.experts.base import EXPERTS, ExpertNet, net_inputs
from eagrl.utils.numerics import NonFiniteGuard


def build_expert(name: str, n_dynamic: int, n_static: int, **params: Any) -> ExpertNet:
    """Instantiate the expert registered as ``name``."""
    if name not in EXPERTS:
        raise ConfigError(f"unknown expert {name!r} (expert.name); available: {', '.join(sorted(EXPERTS))}")
    return EXPERTS[name](n_dynamic=n_dynamic, n_static=n_static, **params)


class ExpertModule(L.LightningModule):
    """Train / evaluate an expert network on EHRDataModule batches.

    Args:
        name: registered expert name (``concare``, ``adacare``, ...).
        n_dynamic, n_static: feature counts F and S of the dataset.
        params: constructor arguments of the network (hidden_dim, dropout, ...).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        on_nonfinite: a non-finite training loss is skipped (``skip``) or stops the run (``stop``).
    """

    def __init__(
        self,
        name: str,
        n_dynamic: int,
        n_static: int,
        params: dict,
        lr: float,
        weight_decay: float,
        on_nonfinite: str = "skip",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.guard = NonFiniteGuard(on_nonfinite, "train.on_nonfinite")
        self.net = build_expert(name, n_dynamic, n_static, **params)
        self.loss = nn.BCEWithLogitsLoss()
        metrics = MetricCollection({"auroc": BinaryAUROC(), "auprc": BinaryAveragePrecision()})
        # ModuleDict keys may not shadow Module attributes such as ``train``: suffix them
        self.metrics = nn.ModuleDict(
            {f"{split}_": metrics.clone(prefix=f"{split}/") for split in ("train", "val", "test")}
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits (B,)."""
        return self.net(*net_inputs(batch))

    def _step(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        logits = self(batch)
        loss = self.loss(logits, batch["label"])
        aux = getattr(self.net, "aux_loss", None)
        if split == "train" and aux is not None:
            loss = loss + aux
        metrics = self.metrics[f"{split}_"]
        metrics.update(torch.sigmoid(logits.detach()), batch["label"].long())
        self.log(f"{split}/loss", loss, prog_bar=split != "test", batch_size=len(logits), on_epoch=True, on_step=False)
        self.log_dict(metrics, on_epoch=True, on_step=False, prog_bar=split == "val")
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        """The batch's loss, or None (Lightning skips the batch) when it is not finite."""
        loss = self._step(batch, "train")
        finite = self.guard.check(loss, self.global_step)
        self.log("train/nonfinite_skips", float(self.guard.count), on_step=False, on_epoch=True, batch_size=1)
        return loss if finite else None

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
