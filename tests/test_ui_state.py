"""Choices that survive a reload (the URL's query parameters, the workspace's last choices), names people can
read for runs and datasets, and the charts' small fixes (whole epochs, a legend clear of the axis title, colours
that tell compared runs apart)."""
from __future__ import annotations

import pandas as pd
from streamlit.testing.v1 import AppTest

from core import preferences
from core.backbones import DEFAULT_BACKBONE
from core.charts import RUN_COLORS, history_figure, overlay_figure
from core.config import TrainConfig
from core.labeling import make_editable_copy
from core.labeling.copies import dataset_title
from core.runs import RETRAIN_PREFIX, create_run, file_stem, run_dataset_title, run_title
from ui.state import DEMO_PARAM, dataset_from_param, dataset_to_param


def app(project_root, **params) -> AppTest:
    """app.py as a fresh browser tab opening a URL with these query parameters."""
    at = AppTest.from_file(str(project_root / "app.py"), default_timeout=120)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def test_a_reload_keeps_the_dataset_from_the_url(workspace, make_dataset, project_root):
    mine = make_dataset(workspace / "datasets" / "my photos")
    at = app(project_root, dataset="my photos")
    assert at.session_state["dataset"] == str(mine)
    assert at.query_params["dataset"] == "my photos"
    # The built-in demo has its own token: a workspace dataset named "demo" (an editable copy) reads apart.
    at = app(project_root, dataset=DEMO_PARAM)
    assert dataset_from_param(at.query_params["dataset"]).name == "demo"
    # Paths and tricks in the URL are not datasets: the defaults stay.
    assert dataset_from_param("../../etc") is None and dataset_from_param("/etc") is None
    assert dataset_from_param("no such dataset") is None


def test_a_new_tab_without_parameters_opens_the_last_dataset_and_run(workspace, make_dataset, project_root):
    mine = make_dataset(workspace / "datasets" / "plants")
    app(project_root, dataset="plants", run="20261201-140200-bottleneck-abcd")
    remembered = preferences.last_choices()
    assert {k: remembered[k] for k in ("dataset", "run_id")} == {"dataset": str(mine),
                                                                 "run_id": "20261201-140200-bottleneck-abcd"}
    at = app(project_root)
    assert at.session_state["dataset"] == str(mine)
    assert at.session_state["run_id"] == "20261201-140200-bottleneck-abcd"
    # The training choices are at their defaults: the URL leaves them out.
    assert at.query_params == {"dataset": "plants", "run": "20261201-140200-bottleneck-abcd"}
    assert dataset_to_param(mine) == "plants"


def test_the_training_choices_survive_a_reload_and_open_in_a_new_tab(workspace, project_root):
    at = app(project_root)
    at.switch_page("pages/4_training.py").run()
    assert not at.exception, at.exception
    at.radio(key="train_mode").set_value("scratch")
    at.number_input(key="train_epochs").set_value(60)
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["mode"] == "scratch" and at.session_state["epochs"] == 60
    assert at.query_params["mode"] == "scratch" and at.query_params["epochs"] == "60"
    assert "backbone" not in at.query_params  # still the default
    assert {k: v for k, v in preferences.last_choices().items() if k in ("mode", "epochs")} == \
        {"mode": "scratch", "epochs": "60"}
    # A reload (the URL as the app wrote it) opens the Training page on the same choices.
    params = {k: at.query_params[k] for k in at.query_params}
    reloaded = app(project_root, **params)
    reloaded.switch_page("pages/4_training.py").run()
    assert reloaded.radio(key="train_mode").value == "scratch"
    assert reloaded.number_input(key="train_epochs").value == 60
    # A new tab (no parameters) takes the workspace's last choices.
    assert app(project_root).session_state["mode"] == "scratch"
    # A URL the app wrote is complete: one without `mode` means the default, whatever another tab chose last.
    assert app(project_root, dataset=DEMO_PARAM).session_state["mode"] == "bottleneck"
    # Values the page does not offer are ignored.
    odd = app(project_root, dataset=DEMO_PARAM, mode="magic", epochs="0", backbone="../x")
    assert (odd.session_state["mode"], odd.session_state["epochs"], odd.session_state["backbone"]) == \
        ("bottleneck", 30, DEFAULT_BACKBONE)


def test_runs_and_datasets_have_readable_names(workspace, demo_dataset, make_dataset):
    mine = make_dataset(workspace / "datasets" / "my-dataset")
    run = create_run(TrainConfig(data=str(mine), mode="bottleneck"))
    title = run_title(run)
    assert title.startswith("bottleneck · my-dataset · ") and run.id not in title
    assert file_stem(run).startswith("bottleneck-my-dataset-") and "·" not in file_stem(run)
    named = create_run(TrainConfig(data=str(mine), mode="scratch"), name="first try")
    assert run_title(named) == "first try" and file_stem(named) == "first-try"
    retrain = create_run(TrainConfig(data=str(mine), mode="bottleneck"), name=f"{RETRAIN_PREFIX}{named.id}")
    assert run_title(retrain) == "retrain of first try"
    # The demo and its editable copy (named "demo" too) read apart.
    copy = make_editable_copy(demo_dataset, "demo")
    assert dataset_title(demo_dataset) == "built-in demo"
    assert dataset_title(copy) == "demo (your copy of the built-in demo)"
    assert run_dataset_title(run) == "my-dataset"


def test_charts_whole_epochs_legend_on_top_distinct_colours():
    history = pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.5], "val_loss": [1.1, 0.7],
                            "accuracy": [0.5, 0.8], "val_accuracy": [0.4, 0.7]})
    fig = history_figure(history, "loss")
    assert fig.layout.xaxis.dtick == 1 and fig.layout.xaxis.tickformat == "d"
    assert fig.layout.legend.y > 1  # above the plot, clear of the "epoch" title below it
    overlay = overlay_figure({"a": history, "b": history}, "val_accuracy")
    assert [t.line.color for t in overlay.data] == RUN_COLORS[:2]
    assert overlay.layout.legend.y > 1
