"""AppTest of the Runs page: the table, overlaid curves of selected runs, opening a run's predictions, deleting
(a copy of) a run, and refusing to delete a run that is still training."""
from __future__ import annotations

import base64
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.runs import Run, process_start_time, run_title


@pytest.fixture
def runs_page(project_root):
    def runs_page() -> AppTest:
        at = AppTest.from_file(str(project_root / "app.py"), default_timeout=180)
        at.run()
        at.switch_page("pages/6_runs.py")
        at.run()
        assert not at.exception, at.exception
        return at

    return runs_page


def select_rows(at: AppTest, *rows: int) -> AppTest:
    # What a click on the table's row checkboxes sends (Streamlit ≥1.50 accepts it through session state).
    at.session_state["runs_table"] = {"selection": {"rows": list(rows), "columns": []}}
    at.run()
    assert not at.exception, at.exception
    return at


def array(value) -> np.ndarray:
    """A plotly JSON array: a list, or (plotly 6+) {"dtype", "bdata": base64 of the raw buffer}."""
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
    return np.asarray(value)


def test_empty_workspace_says_no_runs_yet(workspace, runs_page):
    at = runs_page()
    assert any("No runs yet" in i.value for i in at.info)
    assert at.get("page_link")
    assert not at.dataframe


def test_table_lists_the_run_and_selection_overlays_its_curves(demo_run, monkeypatch, runs_page):
    monkeypatch.setenv("FEWSHOT_WORKSPACE", str(demo_run.parent.parent))
    at = runs_page()
    table = at.dataframe(key="runs_table").value
    assert table["run"].tolist() == [demo_run.name]
    assert table["status"].tolist() == ["done"] and 0 < table["val_accuracy"][0] <= 1
    assert not at.get("plotly_chart")  # nothing ticked yet

    select_rows(at, 0)
    charts = at.get("plotly_chart")
    assert len(charts) == 3  # validation accuracy, validation loss, training accuracy
    history = pd.read_csv(demo_run / "history.csv")
    for chart, metric in zip(charts, ["val_accuracy", "val_loss", "accuracy"]):
        traces = json.loads(chart.proto.spec)["data"]
        # Runs are named as people read them (the name typed at Start, else mode · dataset · time).
        assert [trace["name"] for trace in traces] == [f"{run_title(Run(demo_run))} (bottleneck, on built-in demo)"]
        assert array(traces[0]["x"]).tolist() == history["epoch"].tolist()
        assert np.allclose(array(traces[0]["y"]), history[metric])
    assert any(demo_run.name in m.value for m in at.markdown)
    assert at.get("json")  # the config in its expander


def test_ticked_runs_stay_ticked_when_a_new_run_shifts_the_rows(run_copy, runs_page):
    older = run_copy.parent / "20000101-000000-bottleneck-0000"
    shutil.copytree(run_copy, older)
    at = select_rows(runs_page(), 1)
    assert any(older.name in m.value and "bottleneck" in m.value for m in at.markdown)
    newer = run_copy.parent / "20990101-000000-bottleneck-0000"  # a retrain: listed above the older run
    shutil.copytree(run_copy, newer)
    at.run()
    assert not at.exception, at.exception
    assert at.dataframe(key="runs_table").value["run"].tolist() == [run_copy.name, newer.name, older.name]
    assert at.session_state["runs_table"]["selection"]["rows"] == [2]  # still the older run, now third
    assert [b.key for b in at.button if b.key.startswith("runs_show_")] == [f"runs_show_{older.name}"]


def test_show_predictions_opens_that_run(run_copy, runs_page):
    other = run_copy.parent / "20000101-000000-bottleneck-0000"  # an older run: not the default on Predictions
    shutil.copytree(run_copy, other)
    at = runs_page()
    assert at.dataframe(key="runs_table").value["run"].tolist() == [run_copy.name, other.name]
    select_rows(at, 1)
    at.button(key=f"runs_show_{other.name}").click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Predictions"
    assert at.selectbox(key="pred_run").value == other.name


def test_delete_asks_first_then_removes_the_copy(run_copy, runs_page):
    at = select_rows(runs_page(), 0)
    at.button(key=f"runs_delete_{run_copy.name}").click().run()
    assert any("for good" in w.value for w in at.warning)
    assert run_copy.exists()  # nothing deleted before the confirmation
    at.button(key=f"runs_delete_no_{run_copy.name}").click().run()
    assert not at.warning and run_copy.exists()

    at.button(key=f"runs_delete_{run_copy.name}").click().run()
    at.button(key=f"runs_delete_yes_{run_copy.name}").click().run()
    assert not at.exception, at.exception
    assert not run_copy.exists()
    assert any("deleted" in s.value for s in at.success)
    assert any("No runs yet" in i.value for i in at.info)


def test_a_running_run_is_not_deleted(run_copy, runs_page):
    status = json.loads((run_copy / "status.json").read_text())
    # This test process stands in for the training process: alive, so the run really is "running".
    status.update(state="running", pid=os.getpid(), pid_start=process_start_time(os.getpid()), finished_at=None)
    (run_copy / "status.json").write_text(json.dumps(status))
    at = select_rows(runs_page(), 0)
    at.button(key=f"runs_delete_{run_copy.name}").click().run()
    at.button(key=f"runs_delete_yes_{run_copy.name}").click().run()
    assert not at.exception, at.exception
    assert run_copy.exists()
    assert any("still running" in e.value for e in at.error)


def test_a_retrain_is_shown_before_and_after(run_copy, runs_page):
    """Issue 4.3: after "Retrain with my fixes", the Runs page compares the retrain with the run it fixed."""
    after = run_copy.parent / "29990101-000000-bottleneck-ffff"  # newer than the source
    shutil.copytree(run_copy, after)
    config = json.loads((after / "config.json").read_text())
    config["name"] = f"retrain of {run_copy.name}"
    (after / "config.json").write_text(json.dumps(config))
    metrics = json.loads((after / "metrics.json").read_text())
    metrics.update(n_extracted=3)
    (after / "metrics.json").write_text(json.dumps(metrics))
    # The retrain gets one validation photo wrong that the source got right: before/after on the same photos.
    from core.runs import Run
    frame = Run(after).predictions()
    val = frame.index[(frame["split"] == "val") & frame["correct"]]
    wrong = next(c for c in metrics["classes"] if c != frame.loc[val[0], "label"])
    frame.loc[val[0], "predicted"] = wrong
    Run(after).write_predictions(frame)
    n_val = int((frame["split"] == "val").sum())
    at = runs_page()
    source_title = run_title(Run(run_copy))
    assert any("last fix-and-retrain" in m.value and source_title in m.value.replace("\\", "")
               and "retrain of" in m.value for m in at.markdown)
    accuracy = next(m for m in at.metric if m.label == f"Validation accuracy ({n_val} photos)")
    assert accuracy.delta == f"{-100 / n_val:+.1f} points"
    assert next(m for m in at.metric if m.label == "Photos processed anew").value == "3"
