"""AppTest of the Training page: renders, starts a real run process, shows its charts and metrics."""
from __future__ import annotations

import time

import pytest
from streamlit.testing.v1 import AppTest

from core.runs import list_runs


@pytest.fixture
def training_page(project_root):
    def training_page() -> AppTest:
        at = AppTest.from_file(str(project_root / "app.py"), default_timeout=180)
        at.run()
        at.switch_page("pages/4_training.py")
        at.run()
        return at

    return training_page


def test_renders_on_an_empty_workspace(workspace, training_page):
    at = training_page()
    assert not at.exception
    assert at.button(key="train_start")
    assert [r.value for r in at.radio] == ["bottleneck"]


def test_training_started_from_the_page_finishes_and_shows_results(workspace, training_page):
    at = training_page()
    at.number_input(key="train_epochs").set_value(5)
    at.button(key="train_start").click()
    at.run()
    assert not at.exception
    runs = list_runs()
    assert len(runs) == 1
    run = runs[0]
    assert run.config().epochs == 5 and run.config().mode == "bottleneck"
    deadline = time.time() + 240
    while run.status().state in ("queued", "running") and time.time() < deadline:
        time.sleep(1)
    assert run.status().state == "done", run.log_tail()
    at.run()
    assert not at.exception
    assert any("Finished" in s.value for s in at.subheader)
    assert at.metric[0].label == "Validation accuracy" and at.metric[0].value.endswith("%")
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    assert len(run.history()) >= 1
