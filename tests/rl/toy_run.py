"""The toy RL run of test_module as a script, for data-parallel tests: Lightning's DDP launcher starts the other
processes by rerunning the command line, which a pytest process cannot do.

    python -m tests.rl.toy_run <processes> <history.json>
"""

from __future__ import annotations

import json
import sys

import lightning as L
import torch

from eagrl.rl.distributed import RolloutParallel
from eagrl.rl.module import PolicyRLModule, step_loader
from tests.rl.test_module import RL_TOY, letters, toy_policy


def main(processes: int, output: str) -> None:
    torch.set_num_threads(1)
    model, tokenizer, prompts = toy_policy()
    module = PolicyRLModule(model, tokenizer, prompts, RL_TOY, reward=letters)
    strategy = RolloutParallel(process_group_backend="gloo") if processes > 1 else "auto"
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=processes, strategy=strategy, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, step_loader(RL_TOY.steps))
    if trainer.is_global_zero:
        adapter = {name: p.detach().sum().item() for name, p in model.named_parameters() if p.requires_grad}
        with open(output, "w") as handle:
            json.dump({"history": module.history, "adapter": adapter}, handle)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
