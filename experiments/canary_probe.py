"""Can the frozen backbone represent the canary's outcome? A linear probe (issue 16's label-only control).

Label-only LoRA SFT of SmolLM2-135M stays at chance on the canary's validation split (BENCHMARKS "Canary: a
label-only SFT control"). This tells representation from optimisation: the frozen backbone reads each training
patient's readable prompt (``experiment=canary``, vanilla style) followed by the assistant's ``<Final answer> 0.``,
and a logistic regression (L2, C chosen by 5-fold cross-validation on train) is fitted on the last token's hidden
state of several layers (train split), then scored on the validation split. The same logistic regression on the
prompt's own information (one 0/1 "flagged" column per lab) is the ceiling a reader of the flags can reach, the
number of flagged labs what a reader who ignores which lab is flagged reaches, and the generator's risk the Bayes
ceiling. The test split is never read.

    .venv/bin/python experiments/canary_probe.py                         # layers 6, 12, 18, 24, 30
    .venv/bin/python experiments/canary_probe.py --layers 10 20 -- backbone=tiny_random

Arguments after ``--`` are Hydra overrides of the composed ``sft`` config (``experiment=canary sft=label_only``
come first). Prints one markdown table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from hydra.utils import instantiate
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from eagrl.cli.entry import compose_entry
from eagrl.data.synthetic import RISK
from eagrl.stages.runtime import prepared_datamodule

#: what the assistant has written when it gives the first digit (the token-expectation score reads the next token)
ANSWER_PREFIX = "<Final answer> 0."


def hidden_states(model, tokenizer, prompts, layers: list[int]) -> np.ndarray:
    """``(patients, len(layers), hidden)`` float32: each layer's state at the last token of prompt + answer prefix."""
    rows = []
    with torch.inference_mode():
        for prompt in prompts:
            text = tokenizer.apply_chat_template(prompt.messages(), add_generation_prompt=True, tokenize=False)
            ids = tokenizer(text + ANSWER_PREFIX, add_special_tokens=False, return_tensors="pt")["input_ids"]
            states = model(input_ids=ids, output_hidden_states=True).hidden_states
            rows.append(torch.stack([states[layer][0, -1] for layer in layers]).float().numpy())
    return np.stack(rows)


def flag_columns(prompts) -> np.ndarray:
    """``(patients, labs)`` 0/1: which lines of each prompt carry a (high) / (low) flag."""
    records = [prompt.messages()[-1]["content"].splitlines() for prompt in prompts]
    lines = [[line for line in record if line.startswith("- ")] for record in records]
    return np.array([[("(high)" in line or "(low)" in line) for line in record] for record in lines], dtype=float)


def probe_auroc(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray) -> float:
    """Validation AUROC (×100) of an L2 logistic regression whose C is chosen by 5-fold CV on train."""
    regression = LogisticRegressionCV(
        Cs=10, cv=5, scoring="roc_auc", max_iter=2000, l1_ratios=(0.0,), use_legacy_attributes=False
    )
    probe = make_pipeline(StandardScaler(), regression)
    probe.fit(train_x, train_y)
    return 100 * roc_auc_score(val_y, probe.predict_proba(val_x)[:, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[6, 12, 18, 24, 30], help="hidden-state layers")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (after --)")
    args = parser.parse_args()
    cfg = compose_entry("sft", ["experiment=canary", "sft=label_only", *args.overrides])
    datamodule = prepared_datamodule(cfg)
    model, tokenizer = instantiate(cfg.backbone.loader, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    splits = {}
    for split in ("train", "val"):
        records, prompts = datamodule.patients(split, cfg.task, cfg.prompt)
        started = time.monotonic()
        states = hidden_states(model, tokenizer, prompts, args.layers)
        print(f"{split}: {len(prompts)} patients read in {time.monotonic() - started:.0f} s", flush=True)
        labels = np.array([record.label for record in records])
        splits[split] = (states, flag_columns(prompts), labels, [record.patient_id for record in records])
    (train_states, train_flags, train_y, _), (val_states, val_flags, val_y, val_ids) = splits["train"], splits["val"]
    risk = datamodule.cohort.patients.set_index("patient_id").loc[val_ids, RISK].to_numpy()
    print("\n| probe input (train → val) | val AUROC |\n|---|---:|")
    for position, layer in enumerate(args.layers):
        auroc = probe_auroc(train_states[:, position], train_y, val_states[:, position], val_y)
        print(f"| hidden state, layer {layer} | {auroc:.1f} |")
    flags = probe_auroc(train_flags, train_y, val_flags, val_y)
    print(f"| the prompt's flags (one 0/1 column per lab) | {flags:.1f} |")
    count = 100 * roc_auc_score(val_y, val_flags.sum(axis=1))
    print(f"| the number of flagged labs (the 'anything abnormal' shortcut) | {count:.1f} |")
    print(f"| the generator's risk (Bayes ceiling) | {100 * roc_auc_score(val_y, risk):.1f} |")


if __name__ == "__main__":
    main()
