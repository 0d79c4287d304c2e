"""``eagrl-pipeline``: EAG-RL in one command — expert → salient features → prompting baselines → MCTS → SFT → RL →
evaluation → report.

    eagrl-pipeline                                   # experiment=demo: TJH + SmolLM2-135M on the CPU (make demo)
    eagrl-pipeline experiment=tiny                   # every stage in about a minute with the tiny backbone
    eagrl-pipeline experiment=demo rl=grpo           # an override applies to every stage that has its key
    eagrl-pipeline 'stages=[expert,mcts]'            # some of the stages
    eagrl-pipeline "stage_overrides.rl=['rl.steps=2']"  # an override for one stage only

Each stage is the stage's own entry point (``eagrl-<stage>``'s ``run``) on its own entry config composed with the
pipeline's experiment and overrides, and reads the previous stage's artifact by path (``salient.dir``,
``trajectories``, ``init.adapter``, ``adapter``). A stage whose artifact is complete only reports; a killed one
resumes (shards, checkpoints, answers): rerunning a killed pipeline redoes nothing that finished. Each stage's
metrics and logs go to ``<run dir>/<stage>/``; the run directory gets ``report.md`` with its figures.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import hydra
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

from eagrl.errors import ConfigError
from eagrl.utils.entry import CONFIG_DIR, user_errors

log = logging.getLogger(__name__)

STAGES = ("expert", "baselines", "mcts", "sft", "rl", "evaluate", "report")
#: config groups whose choice in the pipeline's config every stage that has the group receives
SHARED_GROUPS = ("dataset", "task", "prompt", "backbone", "salient")
_MISSING = object()


def override_key(override: str) -> str:
    """``a.b`` of ``+a.b=value`` (the key or group an override sets)."""
    return override.split("=", 1)[0].lstrip("+~")


class Pipeline:
    """Runs the stages of one pipeline config, passing artifacts along."""

    def __init__(self, cfg: DictConfig):
        unknown = [stage for stage in cfg.stages if stage not in STAGES]
        if unknown:
            raise ConfigError(f"stages: unknown stage {unknown[0]!r}; the stages are {', '.join(STAGES)}")
        self.cfg = cfg
        self.run_dir = Path(cfg.paths.output_dir)
        hydra_cfg = HydraConfig.get()
        self.choices = {
            group: hydra_cfg.runtime.choices.get(group) for group in (*SHARED_GROUPS, "experiment", "debug")
        }
        self.command_line = [
            override
            for override in hydra_cfg.overrides.task
            if not override_key(override).startswith(("hydra", "experiment", "debug", *SHARED_GROUPS))
            or "." in override_key(override)
        ]
        self.results: dict[str, dict] = {}

    def compose_stage(self, entry: str, extra: list[str]) -> DictConfig:
        """``entry``'s config with the pipeline's experiment (when it composes with ``entry``: an experiment that
        overrides a group ``entry`` lacks, e.g. the backbone for eagrl-expert, does not), the pipeline's choices of
        the shared groups, the command-line overrides whose key ``entry`` has, then ``extra`` (later ones win)."""
        experiment = (
            [f"experiment={self.choices['experiment']}"] if self.choices["experiment"] not in (None, "null") else []
        )
        try:
            probe = compose(entry, overrides=experiment)
        except ConfigCompositionException:
            log.info("the experiment does not apply to eagrl-%s (it overrides a group the stage lacks)", entry)
            experiment, probe = [], compose(entry)
        groups = [
            f"{group}={choice}"
            for group, choice in self.choices.items()
            if group in SHARED_GROUPS and group in probe and choice
        ]
        if self.choices["debug"] not in (None, "null"):
            groups.append(f"debug={self.choices['debug']}")
        applicable = [
            o for o in self.command_line if OmegaConf.select(probe, override_key(o), default=_MISSING) is not _MISSING
        ]
        merged = {override_key(o): o for o in [*groups, *applicable, *extra]}
        return compose(entry, overrides=[*experiment, *merged.values()])

    def stage(self, name: str, entry: str, extra: list[str] = ()) -> dict:
        """Compose ``entry`` for this stage, run it, return its metrics."""
        output_dir = self.run_dir / name
        output_dir.mkdir(parents=True, exist_ok=True)
        overrides = [*self.cfg.stage_overrides.get(name.split(":")[0], []), *extra, f"paths.output_dir={output_dir}"]
        stage_cfg = self.compose_stage(entry, overrides)
        log.info("pipeline stage %s: eagrl-%s", name, entry)
        metrics = importlib.import_module(f"eagrl.cli.{entry}").run(stage_cfg)
        self.results[name] = metrics
        return metrics

    def run(self) -> dict[str, dict]:
        """Every configured stage in order; returns the metrics of each."""
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
            sft = self.stage("sft", "sft", trajectories)
        if "rl" in stages:
            start = [f"init.adapter={sft['artifact_dir']}"] if sft else []
            rl = self.stage("rl", "rl", [*expert_dir, *start])
        if "evaluate" in stages:
            for name, trained in (("sft", sft), ("rl", rl)):
                if trained is not None:
                    self.stage(f"evaluate:{name}", "evaluate", ["prompt=pqd", f"adapter={trained['artifact_dir']}"])
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
        )
        print(f"report: {path}", flush=True)
        return path


@user_errors("pipeline")
def run(cfg: DictConfig) -> dict[str, dict]:
    """Run the pipeline's stages; return each stage's metrics."""
    return Pipeline(cfg).run()


@hydra.main(config_path=CONFIG_DIR, config_name="pipeline", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Console script ``eagrl-pipeline``."""
    run(cfg)


if __name__ == "__main__":
    main()
