"""The aggregator turns a multirun folder into a table, and reports jobs that did not finish."""

from __future__ import annotations

import json

from eagrl.evaluation.aggregate import render, write_section


def fake_job(root, number, expert, seed, auroc, finished=True):
    job = root / str(number)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- expert={expert}\n- seed={seed}\n")
    if finished:
        metric = {"mean": auroc, "std": 0.02}
        metrics = {
            "dataset": "tjh",
            "task": "mortality",
            "expert": expert,
            "seed": seed,
            "epochs": 12,
            "seconds_per_epoch": 0.5,
            "parameters": 1000,
            "test": {"auroc": metric, "auprc": metric},
        }
        (job / "metrics.json").write_text(json.dumps(metrics))


def test_table_with_seeds_and_failures(tmp_path):
    fake_job(tmp_path, 0, "gru", 0, 0.90)
    fake_job(tmp_path, 1, "gru", 1, 0.92)
    fake_job(tmp_path, 2, "retain", 0, 0.80)
    fake_job(tmp_path, 3, "retain", 1, 0.0, finished=False)
    text = render(tmp_path, "eagrl-expert -m ...")
    assert "| tjh       | mortality | gru      | 91.0 ± 1.0 (boot ± 2.0)" in text
    assert "| retain   | 80.0 ± 0.0 (boot ± 2.0)" in text
    assert "3 jobs finished, 1 failed" in text and "job 3: expert=retain seed=1" in text

    benchmarks = tmp_path / "BENCHMARKS.md"
    write_section(benchmarks, "experts", "first")
    write_section(benchmarks, "experts", "second")
    content = benchmarks.read_text()
    assert "second" in content and "first" not in content and content.count("experts:begin") == 1
