"""Runs as OS processes: started, polled, stopped, killed; and the command line."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from core.config import TrainConfig
from core.runs import create_run, list_runs, runs_table, start_run_process


def _long_run(data: Path, **settings):
    # Scratch, many epochs, no early stopping: long enough to be stopped or killed mid-training.
    cfg = TrainConfig(data=str(data), mode="scratch", epochs=500, batch_size=4, early_stopping=False, **settings)
    run = create_run(cfg)
    start_run_process(run)
    return run


def test_stop_request_ends_a_run_as_stopped_keeping_the_best_model(workspace, tiny_dataset, wait_for):
    run = _long_run(tiny_dataset)
    wait_for(lambda: len(run.history()) >= 2)
    assert run.status().state == "running"
    run.request_stop()
    status = wait_for(lambda: run.status() if run.status().state not in ("queued", "running") else None, 120)
    assert status.state == "stopped"
    assert run.has_model() and run.metrics()["epochs_run"] < 500


def test_killed_process_leaves_the_run_failed_and_no_model(workspace, tiny_dataset, wait_for):
    run = _long_run(tiny_dataset)
    wait_for(lambda: len(run.history()) >= 1)
    os.kill(run.status().pid, signal.SIGKILL)
    status = wait_for(lambda: run.status() if run.status().state == "failed" else None, 30)
    assert "ended unexpectedly" in status.error
    assert not run.has_model()
    assert not [p for p in run.path.iterdir() if ".tmp" in p.name]  # no half-written file left behind
    table = runs_table()
    assert table.loc[table["run"] == run.id, "status"].item() == "failed"


def test_second_run_waits_in_a_visible_queue(workspace, tiny_dataset, wait_for):
    first = _long_run(tiny_dataset)
    wait_for(lambda: first.status().state == "running")
    second = create_run(TrainConfig(data=str(tiny_dataset), mode="bottleneck", epochs=2))
    start_run_process(second)
    wait_for(lambda: second.status().message == "waiting for another training to finish", 60)
    assert second.status().state == "queued"
    first.request_stop()
    assert wait_for(lambda: second.status().state == "done", 240)
    assert [r.id for r in list_runs()] == sorted([first.id, second.id], reverse=True)


def test_history_is_readable_while_written(workspace, tiny_dataset, wait_for):
    run = _long_run(tiny_dataset)
    try:
        for _ in range(20):
            history = run.history()  # never raises, whatever moment it reads
            assert list(history.columns)[:5] == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
            time.sleep(0.1)
    finally:
        run.request_stop()
        wait_for(lambda: run.status().state in ("stopped", "done", "failed"), 120)


# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(project_root):
    def cli(*args: str, env_ws: Path) -> subprocess.CompletedProcess:
        env = dict(os.environ, FEWSHOT_WORKSPACE=str(env_ws), TF_CPP_MIN_LOG_LEVEL="3")
        return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, cwd=project_root,
                              env=env, timeout=600)

    return cli


def test_cli_train_predict_evaluate(workspace, tiny_dataset, tmp_path, cli):
    out = tmp_path / "cli-run"
    result = cli("train", str(tiny_dataset), "--mode", "bottleneck", "--epochs", "5", "--test-split", "0.25",
                 "--out", str(out), env_ws=workspace)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "extracting features" in result.stderr and "bottleneck epoch   1" in result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("val_accuracy", "test_accuracy", "classes", "n_train", "n_val", "mode", "backbone", "train_seconds",
                "extract_seconds", "n_extracted"):
        assert key in metrics, key
    assert metrics["test_accuracy"] is not None

    predicted = cli("predict", str(out), str(tiny_dataset / "red"), str(tiny_dataset / "blue" / "img_0.png"),
                    env_ws=workspace)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    lines = predicted.stdout.strip().splitlines()
    assert lines[0] == "path,label,confidence" and len(lines) == 1 + 8 + 1
    frame = pd.read_csv(pd.io.common.StringIO(predicted.stdout))
    assert (frame["label"].iloc[:8] == "red").mean() >= 0.75 and frame["confidence"].between(0, 1).all()

    evaluated = cli("evaluate", str(out), str(tiny_dataset), env_ws=workspace)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    report = json.loads(evaluated.stdout)
    assert set(report) >= {"accuracy", "per_class", "confusion", "classes"} and report["accuracy"] >= 0.8


@pytest.mark.parametrize("args,message", [
    (["train", "/no/such/folder", "--out", "X"], "does not exist"),
    (["train", "{data}", "--mode", "bottleneck", "--backbone", "resnet", "--out", "X"], "Unknown backbone"),
    (["train", "{data}", "--epochs", "0", "--out", "X"], "epochs"),
    (["predict", "/no/run", "a.jpg"], "not a run folder"),
])
def test_cli_bad_input_exits_nonzero_with_one_readable_line(workspace, tiny_dataset, tmp_path, args, message, cli):
    args = [a.replace("{data}", str(tiny_dataset)).replace("X", str(tmp_path / "r")) for a in args]
    result = cli(*args, env_ws=workspace)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and message in last and "Traceback" not in result.stderr
