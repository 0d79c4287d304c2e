"""The base of the policy's LightningModules (SFT, RL): only the LoRA adapter trains."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


class AdapterModule(L.LightningModule):
    """AdamW over the trainable parameters; checkpoints hold those only (a few MB instead of the whole model) and
    load non-strictly onto the frozen base weights.

    Args:
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
    """

    def __init__(self, lr: float, weight_decay: float):
        super().__init__()
        self.strict_loading = False
        self.adapter_lr, self.adapter_weight_decay = lr, weight_decay

    def configure_optimizers(self) -> torch.optim.Optimizer:
        trainable = [parameter for parameter in self.parameters() if parameter.requires_grad]
        return torch.optim.AdamW(trainable, lr=self.adapter_lr, weight_decay=self.adapter_weight_decay)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainable = {name for name, parameter in self.named_parameters() if parameter.requires_grad}
        checkpoint["state_dict"] = {key: value for key, value in checkpoint["state_dict"].items() if key in trainable}
