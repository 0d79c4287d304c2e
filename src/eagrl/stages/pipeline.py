"""The pipeline (``eagrl-pipeline``): EAG-RL in one command — expert → salient features → prompting baselines →
MCTS → SFT → RL → evaluation → report.

Each stage is the stage's library function (``eagrl.stages.<stage>.run``) on its own entry config composed with the
pipeline's experiment and overrides, and reads the previous stage's artifact by path (``salient.dir``,
``trajectories``, ``init.adapter``, ``adapter``). A stage whose artifact is complete only reports; a killed one
resumes (shards, checkpoints, answers): rerunning a killed pipeline redoes nothing that finished. Each stage's
metrics and logs go to ``<run dir>/<stage>/``; the run directory gets ``report.md`` with its figures.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import logging
import resource
import time
from pathlib import Path

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

from eagrl.errors import ConfigError, EAGRLError
from eagrl.stages.schemas import check_groups

log = logging.getLogger(__name__)

STAGES = ("expert", "baselines", "mcts", "sft", "rl", "evaluate", "report")
#: the trained adapters the evaluate stage can score (``evaluate_adapters``)
ADAPTERS = ("sft", "rl")
#: groups the pipeline passes on separately (the experiment and debug apply to a stage when they compose with it)
OWN_GROUPS = ("experiment", "debug")
_MISSING = object()


def release_memory() -> None:
    """Free a finished stage's objects (their reference cycles: trainer, module, callbacks) and hand the freed heap
    back to the OS (glibc's ``malloc_trim``; a no-op elsewhere), so the next stage's peak does not stack on it."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def override_key(override: str) -> str:
    """``a.b`` of ``+a.b=value`` (the key or group an override sets)."""
    return override.split("=", 1)[0].lstrip("+~")


class Pipeline:
    """Runs the stages of one pipeline config, passing artifacts along."""

    def __init__(self, cfg: DictConfig):
        for key, known, kind, known_as in (
            ("stages", STAGES, "stage", "the stages"),
            ("evaluate_adapters", ADAPTERS, "adapter", "the trained adapters"),
        ):
            unknown = [name for name in cfg[key] if name not in known]
            if unknown:
                raise ConfigError(f"{key}: unknown {kind} {unknown[0]!r}; {known_as} are {', '.join(known)}")
        self.cfg = cfg
        self.run_dir = Path(cfg.paths.output_dir)
        hydra_cfg = HydraConfig.get()
        # every group the pipeline selected (dataset, backbone, mcts, rl, ablation, ...), as chosen
        self.choices = {
            group: choice for group, choice in hydra_cfg.runtime.choices.items() if not group.startswith("hydra")
        }
        # command-line values (group choices are in self.choices)
        self.command_line = [o for o in hydra_cfg.overrides.task if override_key(o) not in self.choices]
        self.results: dict[str, dict] = {}

    def compose_stage(self, entry: str, extra: list[str]) -> DictConfig:
        """``entry``'s config with the pipeline's experiment and debug choice (when they compose with ``entry``: an
        experiment that overrides a group ``entry`` lacks, e.g. the backbone for eagrl-expert, does not), the
        pipeline's choice of every group ``entry`` has, the command-line values whose key ``entry`` has, then
        ``extra`` (later ones win)."""
        own = [
            f"{group}={self.choices[group]}" for group in OWN_GROUPS if self.choices.get(group) not in (None, "null")
        ]
        try:
            probe = compose(entry, overrides=own, return_hydra_config=True)
        except ConfigCompositionException:
            log.info("the experiment does not apply to eagrl-%s (it overrides a group the stage lacks)", entry)
            own, probe = [], compose(entry, return_hydra_config=True)
        stage_groups = probe.hydra.runtime.choices
        groups = [
            f"{group}={choice}"
            for group, choice in self.choices.items()
            if group not in OWN_GROUPS and group in stage_groups and choice is not None
        ]
        values = [
            o for o in self.command_line if OmegaConf.select(probe, override_key(o), default=_MISSING) is not _MISSING
        ]
        merged = {override_key(o): o for o in [*groups, *values, *extra]}
        return compose(entry, overrides=[*own, *merged.values()])

    def stage(self, name: str, entry: str, extra: list[str] = ()) -> dict:
        """Compose ``entry`` for this stage, run it, return its metrics. A user error names the stage."""
        output_dir = self.run_dir / name
        output_dir.mkdir(parents=True, exist_ok=True)
        overrides = [*self.cfg.stage_overrides.get(name.split(":")[0], []), *extra, f"paths.output_dir={output_dir}"]
        stage_cfg = self.compose_stage(entry, overrides)
        log.info("pipeline stage %s: eagrl-%s", name, entry)
        started = time.perf_counter()
        try:
            metrics = importlib.import_module(f"eagrl.stages.{entry}").run(stage_cfg)
        except EAGRLError as error:
            raise type(error)(f"stage {name}: {error}") from None
        release_memory()
        log.info(
            "pipeline stage %s done in %.0f s (peak RSS of the pipeline so far %.2f GB, Linux)",
            name, time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
        )  # fmt: skip
        self.results[name] = metrics
        return metrics

    def run(self) -> dict[str, dict]:
        """Every configured stage in order; returns the metrics of each."""
        from eagrl.evaluation.aggregate import machine

        # a number that moves between machines is read against this line (CPU generation, kernel set)
        log.info("machine: %s", machine())
        stages, cfg = set(self.cfg.stages), self.cfg
        expert = sft = rl = None
        expert_dir = []
        if "expert" in stages:
            expert = self.stage("expert", "expert", [f"expert={cfg.salient.expert}", f"seed={cfg.salient.seed}"])
            expert_dir = [f"salient.dir={expert['artifact_dir']}"]
        for style in cfg.baselines if "baselines" in stages else []:
            self.stage(f"baseline:{style}", "evaluate", [f"prompt={style}"])
        if "mcts" in stages:
            search = self.stage("mcts", "mcts", expert_dir)
            trajectories = [f"trajectories={search['artifact_dir']}"]
        else:
            trajectories = []
        if "sft" in stages:
            sft = self.stage("sft", "sft", [*expert_dir, *trajectories])
        if "rl" in stages:
            start = [f"init.adapter={sft['artifact_dir']}"] if sft else []
            rl = self.stage("rl", "rl", [*expert_dir, *start])
        if "evaluate" in stages:
            for name, trained in zip(ADAPTERS, (sft, rl), strict=True):
                if trained is not None and name in cfg.evaluate_adapters:
                    self.stage(f"evaluate:{name}", "evaluate", [f"adapter={trained['artifact_dir']}"])
        if "report" in stages:
            self.report(expert, rl)
        return self.results

    def report(self, expert: dict | None, rl: dict | None) -> Path:
        """``report.md`` of this run from the metrics the stages returned."""
        from eagrl.evaluation.report import write_report

        evaluations = {}
        for name, metrics in self.results.items():
            if name.startswith(("baseline:", "evaluate:")):
                evaluations[f"{metrics['backbone']} / {metrics['method']}"] = metrics
        path = write_report(
            self.run_dir,
            evaluations,
            expert,
            rl,
            title=f"EAG-RL pipeline on {self.cfg.dataset.name}/{self.cfg.task.name}",
            rl_evaluation=self.results.get("evaluate:rl"),
            top_k=self.cfg.salient.top_k,
        )
        print(f"report: {path}", flush=True)
        return path


def run(cfg: DictConfig) -> dict[str, dict]:
    """Run the stages of the pipeline config ``cfg`` (inside a Hydra run: the stages are composed from its choices);
    return each stage's metrics."""
    check_groups(cfg)
    return Pipeline(cfg).run()
