"""From real (tiny) eagrl-pipeline multiruns: Table-1 / Table-2 shaped markdown, and both notebooks executed
with papermill (a failing cell fails the test)."""

from __future__ import annotations

import json
from pathlib import Path

import papermill
import pytest

from eagrl.evaluation.aggregate import render
from tests.cli.test_pipeline_cli import PIPELINE
from tests.conftest import RAW_SOURCE, run_cli

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
STAGES = "stages=[expert,baselines,mcts,sft,rl,evaluate,report]"


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """Table 1 (rl=eagrl,grpo) and Table 2 (two ablations) multiruns at tiny scale; stages shared are reused."""
    tmp = tmp_path_factory.mktemp("tables")
    table1 = run_cli("pipeline", ["-m", *PIPELINE, STAGES, "rl=eagrl,grpo", "hydra.sweep.dir=table1"], tmp)
    assert table1.returncode == 0, table1.stderr[-3000:]
    table2 = run_cli("pipeline", ["-m", *PIPELINE, STAGES, "ablation=no_stage2,no_ratt", "baselines=[]",
                                  "hydra.sweep.dir=table2"], tmp)  # fmt: skip
    assert table2.returncode == 0, table2.stderr[-3000:]
    return tmp


def _header_and_models(text: str) -> tuple[list[str], set[str]]:
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")
    ]
    return rows[0], {row[0] for row in rows[1:]}


@pytest.mark.slow
def test_paper_tables(sweeps):
    text = render(sweeps / "table1", "table 1", layout="paper")
    header, models = _header_and_models(text)
    assert header == ["model", "tjh/mortality AUPRC", "tjh/mortality AUROC"]
    assert {"gru", "tiny_random / pqd", "tiny_random / sft-trajectory", "tiny_random / rl-eagrl",
            "tiny_random / rl-grpo"} == models  # fmt: skip
    assert "2 jobs finished, 0 failed" in text
    _, models = _header_and_models(render(sweeps / "table2", "table 2", layout="paper"))
    assert {"tiny_random / rl-eagrl-no_stage2", "tiny_random / rl-eagrl-no_ratt"} <= models


def _artifact(job: Path, stage: str) -> str:
    return json.loads((job / stage / "metrics.json").read_text())["artifact_dir"]


@pytest.mark.slow
def test_notebooks_run_on_the_tiny_sweep(sweeps, tmp_path):
    job = sweeps / "table1" / "0"
    parameters = {
        "backbone": "tiny_random", "dataset": "tjh", "overrides": ["experiment=tiny"], "patients": 1, "cohort": 6,
        "adapter_before": _artifact(job, "sft"), "adapter_after": _artifact(job, "rl"),
        "expert_dir": _artifact(job, "expert"), "layers": [-1], "max_new_tokens": 16, "root": str(sweeps),
        "raw_source": RAW_SOURCE,
    }  # fmt: skip
    executed = tmp_path / "attention_maps.ipynb"
    papermill.execute_notebook(NOTEBOOKS / "attention_maps.ipynb", executed, parameters=parameters, cwd=sweeps,
                               progress_bar=False, kernel_name="python3")  # fmt: skip
    outputs = json.loads(executed.read_text())
    assert any("top_k" in json.dumps(cell.get("outputs", [])) for cell in outputs["cells"])
    papermill.execute_notebook(
        NOTEBOOKS / "results.ipynb", tmp_path / "results.ipynb", progress_bar=False, kernel_name="python3",
        parameters={"multirun_dirs": [str(sweeps / "table1"), str(sweeps / "table2")], "layout": "paper"},
    )  # fmt: skip
