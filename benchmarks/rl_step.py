"""One GRPO step: ours (``PolicyRLModule``) vs TRL's ``GRPOTrainer`` on the same tiny model, prompts, batch,
group size, completion budget, LoRA adapter and reward, measured in the same process.

    python benchmarks/rl_step.py --write BENCHMARKS.md          # about 2 minutes on the 2-core CPU

Both runners: the tiny test Llama (``conf/backbone/tiny_random.yaml``) with its byte tokenizer and the same
LoRA, ``prompts`` patients' prompts of ``prompt-bytes`` tokens, G answers each of at most ``completion-tokens``
tokens sampled at temperature 1, one optimiser step per generation round, no KL term (β = 0), token-mean loss
(TRL ``loss_type="dapo"``), the same reward (the share of lower-case letters in an answer). The first step of
each runner is a warm-up: the table gives the whole training loop's wall time divided by the steps after it
(TRL generates inside its step; the loop time covers generation, scoring and the update of both).
"""

from __future__ import annotations

import argparse
import string
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import OmegaConf

from eagrl.evaluation.aggregate import provenance, write_section
from eagrl.policy.attention import EAGRL_SDPA
from eagrl.policy.backbone import attach_lora, tiny_random
from eagrl.rewards import RewardTerms
from eagrl.rl.module import PolicyRLModule, RLConfig, step_loader
from eagrl.rl.rollout import RLPrompt

ROOT = Path(__file__).resolve().parents[1]
LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def share_of_letters(text: str) -> float:
    return sum(character in string.ascii_lowercase for character in text) / max(len(text), 1)


def tiny_model():
    config = OmegaConf.load(ROOT / "conf" / "backbone" / "tiny_random.yaml").loader.config
    model, tokenizer = tiny_random(config, seed=0, dtype=torch.float32, attn_implementation=EAGRL_SDPA)
    return attach_lora(model, LORA), tokenizer


def patient_messages(count: int, prompt_bytes: int) -> list[list[dict[str, str]]]:
    rng = np.random.default_rng(0)
    words = ["LDH", "albumin", "glucose", "CRP", "lymphocytes", "D-dimer", "sodium", "urea"]
    return [
        [{"role": "user", "content": " ".join(rng.choice(words, size=prompt_bytes // 6).tolist())[:prompt_bytes]}]
        for _ in range(count)
    ]


class StepTimer(L.Callback):
    """Wall time from the end of the first (warm-up) step to the end of the last."""

    def __init__(self):
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer, module, *args) -> None:
        if len(self.ends) < module.rl.steps:
            self.ends.append(time.perf_counter())


def run_ours(args) -> tuple[list[float], float]:
    torch.manual_seed(0)
    model, tokenizer = tiny_model()
    prompts = []
    for number, messages in enumerate(patient_messages(args.prompts, args.prompt_bytes)):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        prompts.append(RLPrompt(str(number), 0, ids, (), (), (), np.zeros(0)))
    rl = RLConfig(
        steps=args.steps, prompts_per_step=args.prompts, group_size=args.group, updates_per_step=1, lr=1e-4,
        max_new_tokens=args.completion_tokens, adaptive_clip=False, kl_coef=0.0, aggregation="dapo", ppo_epochs=1,
        stop_after_flat_steps=0,
        batch_size=args.prompts * args.group,
    )  # fmt: skip

    def reward(prompt, text, parsed, internal):
        share = share_of_letters(text)
        return RewardTerms(total=share, cls=share, att=0.0, parsed=True)

    module = PolicyRLModule(model, tokenizer, prompts, rl, reward=reward)
    timer = StepTimer()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])  # fmt: skip
    trainer.fit(module, step_loader(rl.steps))
    seconds = (timer.ends[-1] - timer.ends[0]) / (len(timer.ends) - 1)
    return seconds, float(np.mean([h["response_tokens"] for h in module.history[1:]]))


def run_trl(args) -> tuple[list[float], float]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    model, tokenizer = tiny_model()

    def reward(completions, **kwargs):
        texts = [completion[0]["content"] if isinstance(completion, list) else completion for completion in completions]
        return [share_of_letters(text) for text in texts]

    class Timer(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, *args, **kwargs):
            self.ends.append(time.perf_counter())

    timer = Timer()
    dataset = Dataset.from_list(
        [{"prompt": messages} for messages in patient_messages(args.prompts, args.prompt_bytes)]
    )
    with tempfile.TemporaryDirectory() as output_dir:
        config = GRPOConfig(
            output_dir=output_dir, per_device_train_batch_size=args.prompts * args.group, num_generations=args.group,
            max_completion_length=args.completion_tokens, max_steps=args.steps, learning_rate=1e-4, beta=0.0,
            loss_type="dapo", temperature=1.0, num_iterations=1, steps_per_generation=1, report_to="none",
            save_strategy="no", logging_steps=1, use_cpu=True, bf16=False, disable_dropout=True, seed=0,
            dataloader_num_workers=0,
        )  # fmt: skip
        trainer = GRPOTrainer(
            model=model, reward_funcs=reward, args=config, train_dataset=dataset, processing_class=tokenizer,
            callbacks=[timer],
        )  # fmt: skip
        trainer.train()
    lengths = [
        entry["completions/mean_length"] for entry in trainer.state.log_history if "completions/mean_length" in entry
    ]
    seconds = (timer.ends[-1] - timer.ends[0]) / (len(timer.ends) - 1)
    return seconds, float(np.mean(lengths[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="steps per runner (the first is a warm-up)")
    parser.add_argument("--prompts", type=int, default=2, help="prompts per step")
    parser.add_argument("--group", type=int, default=4, help="answers per prompt (G)")
    parser.add_argument("--prompt-bytes", type=int, default=1000, help="prompt length (byte tokens)")
    parser.add_argument("--completion-tokens", type=int, default=64, help="answer budget")
    parser.add_argument("--write", type=Path, help="write the table into this BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    ours, ours_length = run_ours(args)
    trl, trl_length = run_trl(args)
    command = "python benchmarks/rl_step.py " + " ".join(sys.argv[1:])
    lines = [
        f"Command: `{command.strip()}`  ",
        f"{provenance(torch.get_num_threads())}; "
        f"tiny_random backbone + LoRA r=4, {args.prompts} prompts × G={args.group}, prompts of {args.prompt_bytes} "
        f"byte tokens, ≤ {args.completion_tokens} answer tokens, one update per step, "
        f"{args.steps - 1} timed steps each.",
        "",
        "| runner | s/step (loop after the warm-up step) | mean answer tokens | speed-up of ours |",
        "|---|---:|---:|---:|",
        f"| TRL GRPOTrainer | {trl:.2f} | {trl_length:.1f} | {trl / ours:.2f}× |",
        f"| eagrl PolicyRLModule | {ours:.2f} | {ours_length:.1f} | 1.00× |",
    ]
    content = "\n".join(lines)
    print(content)
    if args.write:
        write_section(args.write, "rl_step", content)


if __name__ == "__main__":
    main()
