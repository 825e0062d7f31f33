"""A bottleneck run is done once its results are saved; its model.keras is written right after, from the saved
head. Tested here: the order on disk, a process that dies in between, writing the file again (core, CLI, page)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from core.config import TrainConfig
from core.engine import execute_run, write_run_model
from core.export import load_model, predict_files
from core.runs import create_run, get_run, process_start_time
from core.training import TrainingError, write_model_file


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()  # reaped: nothing answers to this pid any more
    return child.pid


def _as_if_writing(run_dir, pid: int, pid_start: str | None) -> None:
    """The state a run is in between 'done' and its model file being there."""
    (run_dir / "model.keras").unlink()
    run = get_run(run_dir)
    run.update_status(model_file="writing", pid=pid, pid_start=pid_start)


def _model_agrees_with_predictions(run_dir) -> None:
    frame = pd.read_csv(run_dir / "predictions.csv")
    labels = json.loads((run_dir / "labels.json").read_text())
    probs, failed = predict_files(load_model(run_dir / "model.keras"), list(frame["path"]))
    assert not failed
    np.testing.assert_allclose(probs, frame[[f"p_{c}" for c in labels]].to_numpy(), atol=1e-4)


def test_bottleneck_run_is_done_before_its_model_file_which_follows(workspace, tiny_dataset):
    run = create_run(TrainConfig(data=str(tiny_dataset), mode="bottleneck", epochs=3))
    handler_before = signal.getsignal(signal.SIGTERM)
    status = execute_run(run)
    # During the run SIGTERM asked it to stop; after it, the process's own handler is back (a SIGTERM to this
    # process stopped a later test's run before).
    assert signal.getsignal(signal.SIGTERM) is handler_before
    assert status.state == "done" and status.model_file == "ready", status
    assert status.finished_at < status.model_written_at
    assert run.has_model() and run.model_file_state() == "ready"
    assert run.metrics()["export_check"]["same_top1"] == 1.0  # the file, loaded back, predicts what the run did


def test_scratch_run_writes_its_model_before_it_is_done(workspace, tiny_dataset):
    run = create_run(TrainConfig(data=str(tiny_dataset), mode="scratch", epochs=1, batch_size=8))
    status = execute_run(run)
    assert status.state == "done" and status.model_file == "ready" and status.model_written_at is None
    with pytest.raises(TrainingError, match="no trained head on a frozen backbone"):
        write_model_file(run)  # nothing in the folder but model.keras holds a scratch model's weights


def test_process_that_died_before_writing_the_model_file_is_reported_and_repaired(run_copy):
    _as_if_writing(run_copy, _dead_pid(), None)
    run = get_run(run_copy)
    assert run.model_file_state() == "failed"
    status = run.status()
    assert status.state == "done" and "ended before it wrote the model file" in status.model_error
    assert run.has_results() and not run.has_model()

    status = write_run_model(run)
    assert status.model_file == "ready" and status.model_error is None
    _model_agrees_with_predictions(run_copy)


def test_cli_writes_the_model_file_again(run_copy, project_root):
    _as_if_writing(run_copy, _dead_pid(), None)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-m", "core", "export", str(run_copy), "--model-file"],
                            capture_output=True, text=True, cwd=project_root, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(run_copy / "model.keras")
    assert get_run(run_copy).status().model_file == "ready"
    _model_agrees_with_predictions(run_copy)


def test_cli_checks_the_saved_model_again_as_the_warm_worker_child_does(run_copy, project_root):
    """`python -m core export RUN --check`: what the warm worker runs in a child process after each run (issue 10:
    the reload cannot give way to a waiting run from inside, a child process can be stopped)."""
    metrics = json.loads((run_copy / "metrics.json").read_text())
    metrics.pop("export_check", None)
    (run_copy / "metrics.json").write_text(json.dumps(metrics))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-m", "core", "export", str(run_copy), "--check"],
                            capture_output=True, text=True, cwd=project_root, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    check = get_run(run_copy).metrics()["export_check"]
    assert json.loads(result.stdout) == check
    assert check["n_images"] > 0 and check["same_top1"] == 1.0 and check["max_abs_diff"] < 1e-4


def test_predictions_page_shows_results_while_the_model_file_is_written(run_copy, open_app_page):
    # This process stands in for the run's: alive, so the model file is still being written.
    _as_if_writing(run_copy, os.getpid(), process_start_time(os.getpid()))
    at = open_app_page("pages/5_predictions.py")
    assert not at.exception
    assert at.selectbox(key="pred_run").value == run_copy.name
    assert any("Writing the model file" in i.value for i in at.info)
    assert at.get("plotly_chart") and len(at.get("image")) > 0  # the results are all there
    assert not at.get("file_uploader")  # what needs model.keras waits for it
    assert "pred_dl_model" not in [b.key for b in at.get("download_button")]


def test_predictions_page_writes_a_missing_model_file_again(run_copy, open_app_page):
    _as_if_writing(run_copy, _dead_pid(), None)
    at = open_app_page("pages/5_predictions.py")
    assert any("could not be written" in e.value for e in at.error)
    at.button(key="pred_model_new_rewrite").click().run()
    assert not at.exception and not at.error
    assert at.get("file_uploader") and (run_copy / "model.keras").exists()
    _model_agrees_with_predictions(run_copy)


def test_the_saved_model_answers_the_same_when_called_directly(demo_run, demo_dataset):
    """A user's `model(x)` (not only `model.predict`) gets the app's answer, every time: no layer runs in its
    training mode (dropout) in the exported model."""
    import keras
    import numpy as np
    from PIL import Image

    model = keras.saving.load_model(demo_run / "model.keras")
    photo = np.asarray(Image.open(sorted((demo_dataset / "fish").glob("*.jpg"))[0]).convert("RGB"), np.float32)[None]
    first, second = model(photo).numpy(), model(photo).numpy()
    np.testing.assert_allclose(first, second, atol=1e-6)
    np.testing.assert_allclose(first, model.predict(photo, verbose=0), atol=1e-5)
