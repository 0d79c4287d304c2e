"""The canary comparison (issue 16) from the pipeline runs of experiments/canary.sh: base, Stage-1 SFT (trajectory or
expert-label), GRPO and EAG-RL, and any further arm the run has (label-only SFT, trajectory SFT, the ablations w/o R_att
and w/o adaptive clip, DAPO, w/o Stage 1) on a cohort's test split (the synthetic canary, or a real one such as TJH with
experiment=tjh_expert_label), over the training seeds.

    python experiments/canary_compare.py logs/canary/runs/<stamp> [--benchmarks BENCHMARKS.md]

Reads ``<run>/eagrl-seed<S>/`` (eagrl-pipeline experiment=<the run's>, seed=S: the expert, the base model's
baseline:<prompt>, evaluate:sft, evaluate:rl) and ``<run>/<arm>-seed<S>/`` for the other arms of ``ARMS`` (grpo:
rl=grpo ablation=no_ratt; label_only and trajectory: evaluate:sft; the others evaluate:rl). Per method: test AUROC /
AUPRC (mean ± std over seeds), the mean Jaccard of each patient's declared features with the guiding expert's C_exp
of that patient and, on the canary, with the planted set (dataset.planted), parse failures; paired bootstrap 95 %
CIs of the differences EAG-RL − every other method (the same resampled patients for both methods and every seed; the
statistic is the mean over seeds of the per-seed difference); from the RL histories: R_att first vs last steps, the
adaptive-band fraction, the validation curves and the selection rule; and the largest absolute difference between
each RL arm's adapter and EAG-RL's of the same seed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from safetensors.numpy import load_file

from eagrl.evaluation.metrics import metric_of, paired_difference, point_metrics
from eagrl.experts.salient import salient_features
from eagrl.policy.backbone import ADAPTER_WEIGHTS
from eagrl.policy.parsing import READ_STATUSES
from eagrl.rewards import jaccard

#: method name -> (pipeline run prefix, i.e. the arm of experiments/canary.sh, and stage folder; the base model's
#: folder is baseline:<its prompt style>); a method whose arm the run lacks is left out; EAG-RL is compared with
#: every other
METHODS = {
    "base": ("eagrl", "baseline:*"),
    "label-only SFT": ("label_only", "evaluate:sft"),
    "trajectory SFT (MCTS, PQD)": ("trajectory", "evaluate:sft"),
    "Stage-1 SFT": ("eagrl", "evaluate:sft"),
    "GRPO (R_att 0, fixed clip)": ("grpo", "evaluate:rl"),
    "w/o R_att (adaptive clip)": ("no_ratt", "evaluate:rl"),
    "w/o adaptive clip (R_att, fixed clip)": ("no_adaptive_clip", "evaluate:rl"),
    "DAPO": ("dapo", "evaluate:rl"),
    "w/o Stage 1 (RL from the base model)": ("no_stage1", "evaluate:rl"),
    "EAG-RL": ("eagrl", "evaluate:rl"),
}
#: the arms whose pipeline trains an RL adapter, EAG-RL first
RL_ARMS = ("eagrl", *(prefix for prefix, stage in METHODS.values() if stage == "evaluate:rl" and prefix != "eagrl"))
RESAMPLES = 1000
#: the data module the pipeline's stages compose (the pipeline's own config has none)
DATAMODULE = Path(__file__).resolve().parents[1] / "conf" / "datamodule" / "ehr.yaml"


def seeds_of(run: Path) -> list[int]:
    """The seeds with an EAG-RL pipeline run folder."""
    return sorted(int(path.name.removeprefix("eagrl-seed")) for path in run.glob("eagrl-seed*"))


def predictions(run: Path, method: str, seed: int, first_seed: int) -> pd.DataFrame | None:
    """One method's test predictions of one seed (the base model is run once, with the first seed), indexed by
    patient id; None when that run is missing."""
    prefix, stage = METHODS[method]
    folders = sorted((run / f"{prefix}-seed{first_seed if method == 'base' else seed}").glob(stage))
    if not folders or not (folders[0] / "metrics.json").is_file():
        return None
    folder = folders[0]
    metrics = json.loads((folder / "metrics.json").read_text())
    frame = pd.read_parquet(Path(metrics["artifact_dir"]) / "predictions.parquet")
    return frame.set_index("patient_id").sort_index()


def planted_jaccard(frame: pd.DataFrame, planted: list[str]) -> np.ndarray:
    """(patients,) Jaccard of each patient's declared features with the planted set."""
    return np.array([jaccard(list(features), planted) for features in frame["features"]])


def expert_jaccard(frame: pd.DataFrame, expert: dict[str, list[str]]) -> np.ndarray:
    """(patients,) Jaccard of each patient's declared features with that patient's C_exp (``expert_sets``)."""
    return np.array([jaccard(list(features), expert[pid]) for pid, features in frame["features"].items()])


def expert_sets(run: Path, config: DictConfig, seed: int) -> dict[str, list[str]]:
    """Each test patient's C_exp as R_att reads it: the guiding expert's top ``salient.top_k`` among the features
    the patient's prompt shows with a value (the expert of the seed's pipeline run, its importance file)."""
    metrics = json.loads((run / f"eagrl-seed{seed}" / "expert" / "metrics.json").read_text())
    importance = pd.read_parquet(Path(metrics["artifact_dir"]) / "importance.parquet").set_index("patient_id")
    datamodule = instantiate(OmegaConf.merge(config, {"datamodule": OmegaConf.load(DATAMODULE)}).datamodule)
    datamodule.prepare_data()
    datamodule.setup()
    records, prompts = datamodule.patients("test", config.task, config.prompt)
    return {
        record.patient_id: salient_features(
            importance.loc[record.patient_id, "ranking"], prompt.observed_features, config.salient.top_k
        )
        for record, prompt in zip(records, prompts, strict=True)
    }


def rl_summary(run: Path, prefix: str, seed: int) -> dict | None:
    """R_att over training, the adaptive band, the validation curves and the selection rule of one RL run; None when
    that run is missing."""
    path = run / f"{prefix}-seed{seed}" / "rl" / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    folder = Path(metrics["artifact_dir"])
    history = pd.read_csv(folder / "history.csv")
    window = max(1, min(5, len(history) // 2))
    validation = pd.read_csv(folder / "validation.csv") if (folder / "validation.csv").is_file() else pd.DataFrame()
    return {
        "folder": folder,
        "r_att_first": float(history["reward_att"].head(window).mean()),
        "r_att_last": float(history["reward_att"].tail(window).mean()),
        "band_fraction": float(history["band_fraction"].mean()),
        "clip_fraction": float(history["clip_fraction"].mean()),
        "val_auroc": " → ".join(f"{value:.2f}" for value in validation.get("auroc", [])),
        # the validation answers' R_att (older runs did not log it)
        "val_r_att": " → ".join(f"{value:.2f}" for value in validation.get("reward_att", [])) or "not logged",
        "selected_step": metrics.get("selected", {}).get("step"),
        "selected_by": metrics.get("selected", {}).get("by", "?"),
    }


def adapter_difference(first: Path, second: Path) -> float:
    """Largest absolute difference between two saved adapters' weights."""
    a, b = (load_file(folder / ADAPTER_WEIGHTS) for folder in (first, second))
    return float(max(np.abs(a[name] - b[name]).max() for name in a))


def table(run: Path) -> str:
    """The markdown block of the comparison."""
    seeds = seeds_of(run)
    config = OmegaConf.load(run / f"eagrl-seed{seeds[0]}" / ".hydra" / "config.yaml")
    planted = list(config.dataset.get("planted") or [])
    expert = expert_sets(run, config, seeds[0])
    # (column title, per-patient agreement of a frame's declared features)
    agreements = [(f"Jaccard(declared, C_exp of {config.salient.expert})", lambda f: expert_jaccard(f, expert))]
    if planted:
        agreements.append(("Jaccard(declared, planted)", lambda f: planted_jaccard(f, planted)))
    frames = {
        method: [predictions(run, method, seed, seeds[0]) for seed in seeds]
        for method, (prefix, _) in METHODS.items()
        if any(run.glob(f"{prefix}-seed*"))
    }
    lines = [
        f"Seeds {seeds}; test split of {config.dataset.name} ({len(frames['EAG-RL'][0])} patients); "
        + (f"planted features {planted}; " if planted else "")
        + f"C_exp: {config.salient.expert}'s top {config.salient.top_k} of the features each prompt shows; score: "
        f"{score_name(run, seeds[0])}; prompt {config.prompt.style}; Stage 1: "
        f"{evaluation(run, seeds[0], 'sft').get('method', 'missing')}.",
        "",
        "| method | AUROC | AUPRC | " + " | ".join(title for title, _ in agreements) + " | parse failures |",
        "|---|---|---|" + "---|" * len(agreements) + "---|",
    ]
    for method, per_seed in frames.items():
        present = [frame for frame in per_seed if frame is not None]
        if not present:
            lines.append(f"| {method} | missing |" + " |" * (len(agreements) + 2))
            continue
        # a method not yet run for every seed says so beside its mean
        name = method if len(present) == len(seeds) else f"{method} ({len(present)} of {len(seeds)} seeds)"
        scores = [point_metrics(f["label"].to_numpy(), f["probability"].to_numpy()) for f in present]
        overlaps = [fmt([agreement(f).mean() for f in present], 1) for _, agreement in agreements]
        failures = [float((~f["parse_status"].isin(READ_STATUSES)).mean()) for f in present]
        lines.append(
            f"| {name} | {fmt([s['auroc'] for s in scores])} | {fmt([s['auprc'] for s in scores])} | "
            + " | ".join(overlaps)
            + f" | {fmt(failures, 1)} |"
        )
    lines += ["", "Paired bootstrap (1,000 resamples of the test patients, the same for both methods and every seed):",
              "", "| difference | AUROC (points) | " + " | ".join(title for title, _ in agreements) + " |",
              "|---|---|" + "---|" * len(agreements)]  # fmt: skip
    for other in reversed([method for method in frames if method != "EAG-RL"]):
        if any(frame is None for frame in frames[other] + frames["EAG-RL"]):
            continue
        area = paired_difference(frames["EAG-RL"], frames[other], metric_of("auroc"), RESAMPLES)
        cells = [f"{100 * area['difference']:+.1f} [{100 * area['ci_low']:+.1f}, {100 * area['ci_high']:+.1f}]"]
        for _, agreement in agreements:
            overlap = paired_difference(
                frames["EAG-RL"], frames[other], lambda f, rows, a=agreement: a(f)[rows].mean(), RESAMPLES
            )
            cells.append(f"{overlap['difference']:+.3f} [{overlap['ci_low']:+.3f}, {overlap['ci_high']:+.3f}]")
        lines.append(f"| EAG-RL − {other} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| RL run | seed | R_att first → last steps | band fraction | clip fraction | val AUROC over training "
        "| val R_att over training | selected step (by) | max abs adapter difference from EAG-RL |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for seed in seeds:
        summaries = {prefix: rl_summary(run, prefix, seed) for prefix in RL_ARMS}
        runs = {prefix: summary for prefix, summary in summaries.items() if summary is not None}
        for prefix, summary in runs.items():
            difference = "—" if prefix == "eagrl" else "missing"  # missing: the seed's EAG-RL run has not finished
            if prefix != "eagrl" and "eagrl" in runs:
                difference = f"{adapter_difference(runs['eagrl']['folder'], summary['folder']):.2e}"
            lines.append(
                f"| {prefix} | {seed} | {summary['r_att_first']:.3f} → {summary['r_att_last']:.3f} | "
                f"{summary['band_fraction']:.4f} | {summary['clip_fraction']:.4f} | {summary['val_auroc']} | "
                f"{summary['val_r_att']} | {summary['selected_step']} ({summary['selected_by']}) | {difference} |"
            )
    return "\n".join(lines)


def fmt(values, scale: float = 100) -> str:
    """mean ± std over seeds (×100 for AUROC / AUPRC)."""
    values = np.asarray(values, dtype=float) * scale
    return f"{values.mean():.1f} ± {values.std():.1f}" if scale == 100 else f"{values.mean():.3f} ± {values.std():.3f}"


def evaluation(run: Path, seed: int, adapter: str) -> dict:
    """metrics.json of the EAG-RL pipeline's test evaluation of its ``adapter`` (sft or rl); empty when missing."""
    path = run / f"eagrl-seed{seed}" / f"evaluate:{adapter}" / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def score_name(run: Path, seed: int) -> str:
    """The score the evaluations used (metrics.json ``score``)."""
    return str(evaluation(run, seed, "rl").get("score", "greedy"))


def experiment_of(run: Path) -> str:
    """The experiment config the run's pipelines composed (canary or canary_expert_label)."""
    seed = seeds_of(run)[0]
    return str(OmegaConf.load(run / f"eagrl-seed{seed}" / ".hydra" / "hydra.yaml").hydra.runtime.choices.experiment)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the experiments/canary.sh run folder")
    parser.add_argument("--benchmarks", type=Path, help="replace the canary_comparison block of this file")
    args = parser.parse_args()
    block = table(args.run)
    print(block)
    if args.benchmarks:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        text = args.benchmarks.read_text() if args.benchmarks.is_file() else ""  # a new scratch file is fine
        experiment = experiment_of(args.run)
        name = "canary_comparison" if experiment == "canary" else f"canary_comparison_{experiment}"
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        command = "bash experiments/canary.sh"
        if experiment != "canary":
            command = f"EXPERIMENT={experiment} {command}"
        header = f"Command: `{command}` (run {args.run}), commit {commit}, 2-core CPU, no GPU."
        body = f"{start}\n{header}\n\n{block}\n{end}"
        if start in text:
            text = text[: text.index(start)] + body + text[text.index(end) + len(end) :]
        else:
            title = f"## Canary (experiment={experiment}): base, SFT, GRPO and EAG-RL over seeds"
            text = text.rstrip() + f"\n\n{title}\n\n" + body + "\n"
        args.benchmarks.write_text(text)


if __name__ == "__main__":
    main()
