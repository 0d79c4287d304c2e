"""The aggregator turns a multirun folder into a table, and reports jobs that did not finish."""

from __future__ import annotations

import json
import re

from eagrl.evaluation.aggregate import machine, render, write_section


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


def _cells(text: str) -> list[list[str]]:
    """Cells of every markdown table row."""
    return [
        [cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")
    ]


def test_table_with_seeds_and_failures(tmp_path):
    fake_job(tmp_path, 0, "gru", 0, 0.90)
    fake_job(tmp_path, 1, "gru", 1, 0.92)
    fake_job(tmp_path, 2, "retain", 0, 0.80)
    fake_job(tmp_path, 3, "retain", 1, 0.0, finished=False)
    text = render(tmp_path, "eagrl-expert -m ...")
    rows = {cells[2]: cells for cells in _cells(text)}
    assert rows["gru"][:4] == ["tjh", "mortality", "gru", "91.0 ± 1.0 (boot ± 2.0)"]
    assert rows["retain"][3] == "80.0 ± 0.0 (boot ± 2.0)"
    assert "3 jobs finished, 1 failed" in text and f"job {tmp_path.name}/3: expert=retain seed=1" in text

    benchmarks = tmp_path / "BENCHMARKS.md"
    write_section(benchmarks, "experts", "first")
    write_section(benchmarks, "experts", "second")
    content = benchmarks.read_text()
    assert "second" in content and "first" not in content and content.count("experts:begin") == 1


def test_llm_jobs_get_parse_and_speed_columns(tmp_path):
    for number, (method, auroc, failure) in enumerate([("pqd", 0.5, 1.0), ("vanilla", 0.6, 0.25)]):
        job = tmp_path / str(number)
        (job / ".hydra").mkdir(parents=True)
        metric = {"mean": auroc, "std": 0.01}
        metrics = {
            "dataset": "tjh", "task": "mortality", "backbone": "smollm2_135m", "method": method, "seed": 0,
            "split": "test", "test": {"auroc": metric, "auprc": metric},
            "parsing": {"parse_failure_rate": failure, "pqd_format_rate": 1 - failure},
            "generation": {"seconds_this_run": 100.0, "generated_tokens_per_second": 20.0},
        }  # fmt: skip
        (job / "metrics.json").write_text(json.dumps(metrics))
    text = render(tmp_path, "eagrl-evaluate -m prompt=pqd,vanilla")
    assert "smollm2_135m / vanilla" in text and "parse failures %" in text
    header, *rows = _cells(text)
    row = dict(zip(header, next(cells for cells in rows if cells[2].endswith("vanilla")), strict=True))
    assert row["AUROC"] == "60.0 ± 0.0 (boot ± 1.0)" and row["parse failures %"] == "25.0"
    assert row["PQD format %"] == "75.0"
    assert "s/epoch (CPU)" not in header


def test_robustness_layout_and_plot(tmp_path):
    from eagrl.evaluation.aggregate import collect, robustness_layout, robustness_plot

    runs = [("rl-eagrl", 0.0, 0, 0.70), ("rl-eagrl", 0.4, 0, 0.68), ("rl-eagrl", 0.4, 1, 0.66), ("pqd", 0.4, 0, 0.5)]
    for number, (method, fraction, seed, auroc) in enumerate(runs):
        job = tmp_path / str(number)
        (job / ".hydra").mkdir(parents=True)
        metric = {"mean": auroc, "std": 0.01}
        metrics = {
            "dataset": "tjh", "task": "mortality", "backbone": "smollm2_135m", "method": method, "seed": 0,
            "split": "test", "test": {"auroc": metric, "auprc": metric}, "shuffle_fraction": fraction,
            "shuffle_seed": seed, "parsing": {"parse_failure_rate": 0.0},
            "generation": {"seconds_this_run": 1.0, "generated_tokens_per_second": 1.0},
        }  # fmt: skip
        (job / "metrics.json").write_text(json.dumps(metrics))
    frame, _ = collect(tmp_path)
    table = robustness_layout(frame).set_index("model")
    assert table.loc["smollm2_135m / rl-eagrl", "0 % AUROC"] == "70.0 ± 0.0"
    assert table.loc["smollm2_135m / rl-eagrl", "40 % AUROC"] == "67.0 ± 1.0"  # mean ± std over the two seeds
    assert table.loc["smollm2_135m / pqd", "40 % AUPRC"] == "50.0 ± 0.0"
    assert robustness_plot(frame, tmp_path / "robustness.png").stat().st_size > 0


def test_machine_names_the_cpu_generation_and_kernel_set():
    # "AMD EPYC (family 25 model 17), torch kernels AVX512, 2 cores" on Linux; the family / model part when known
    assert re.fullmatch(r".+, torch kernels [\w ]+, \d+ cores", machine())
