"""The benchmark scripts still run (on a few generated images) and print their tables. No timing is asserted:
the numbers live in BENCHMARKS.md."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

TABLE_ROW = re.compile(r"^\|.*\|$", re.MULTILINE)


def module_of(script: str) -> str:
    """bench/extract.py runs as `python -m bench.extract` from the project root."""
    return "bench." + script.removesuffix(".py")


@pytest.fixture
def run_bench(project_root):
    def run(script: str, *args: str, timeout: int = 300) -> str:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run([sys.executable, "-m", module_of(script), "--tiny", *args], cwd=project_root,
                              env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = proc.stdout
        assert "Machine:" in out and "cores" in out, out
        assert "|---|" in out, out
        return out

    return run


def rows(out: str, containing: str) -> list[str]:
    return [r for r in TABLE_ROW.findall(out) if containing in r]


def test_extract_compares_every_system_and_reports_the_limit(workspace, run_bench):
    out = run_bench("extract.py")
    for label in ("(a) recipe", "(b) image_dataset_from_directory", "this project, Keras engine",
                  "this project as shipped"):
        assert len(rows(out, label)) >= 2, (label, out)  # throughput table and roofline table
    assert "GFLOP/s" in out and "fraction of limit" in out
    assert rows(out, "efficientnet_lite0 | ") and "max abs diff" in out


def test_train_times_a_bottleneck_run_and_a_retrain_after_relabelling(workspace, run_bench):
    out = run_bench("train.py", "--modes", "bottleneck", "relabel")
    for cache in ("| cold |", "| warm |", "| first |", "| relabel 5 |"):
        assert rows(out, cache), (cache, out)
    header = rows(out, "| dataset | mode | cache |")[0].split("|")
    relabel = dict(zip(header, rows(out, "| relabel 5 |")[0].split("|")))
    assert relabel[" images through network "].strip().startswith("0"), relabel  # nothing extracted again
    assert float(relabel[" to done s "].split()[0]) <= float(relabel[" to model file s "].split()[0]), relabel


def test_augment_compares_cached_copies_with_plain_bottleneck(workspace, run_bench):
    out = run_bench("augment.py", "--no-finetune")
    assert rows(out, "| bottleneck |") and rows(out, "| bottleneck K=1 |"), out


def test_memory_reports_peak_memory_per_count(workspace, run_bench):
    out = run_bench("memory.py")
    assert len(rows(out, "| tflite |")) == 2, out


def test_ui_times_refresh_reads_while_a_run_trains(workspace, run_bench):
    out = run_bench("ui.py")
    assert rows(out, "refresh reads (status + history)") and rows(out, "page run: Training"), out


def test_finetune_cached_compares_with_the_apps_finetune(workspace, run_bench):
    out = run_bench("finetune_cached.py")
    assert rows(out, "finetune --finetune-full") and rows(out, "finetune (cached), cold cache") \
        and rows(out, "finetune (cached), warm cache"), out


def test_finetune_gain_compares_the_fine_tunes_with_their_head_and_logistic_regression(workspace, run_bench):
    out = run_bench("finetune_gain.py")
    for label in ("logistic regression (sklearn, features)", "| bottleneck head |", "fine-tune before",
                  "fine-tune after (calibrated head, warm-up + cosine)", "| tiny |"):
        assert rows(out, label), (label, out)


@pytest.mark.parametrize("script", ["extract.py", "train.py", "augment.py", "memory.py", "ui.py",
                                    "finetune_cached.py", "finetune_gain.py", "bf16.py"])
def test_scripts_document_how_to_run_them(script, project_root):
    text = (project_root / "bench" / script).read_text()
    assert f".venv/bin/python -m {module_of(script)}" in text
