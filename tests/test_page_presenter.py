"""AppTest of the Presenter page: the recipe's story in one click (started, found again, told), and the learning
curve drawn from the cached features."""
from __future__ import annotations

import json
import re

import pytest
from streamlit.testing.v1 import AppTest

from core.story import list_stories

PAGE = "pages/8_presenter.py"


def shown(at: AppTest) -> str:
    return re.sub(r"\\(.)", r"\1", "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption]
                                             + [i.value for i in at.info]))


def test_an_empty_workspace_offers_the_two_clicks(workspace, open_app_page):
    at = open_app_page(PAGE)
    assert at.button(key="presenter_start").label == "Tell the recipe's story"
    assert at.button(key="presenter_curve").label == "Draw the learning curve"
    assert "One click trains the recipe's three stages" in shown(at)
    assert not at.get("plotly_chart")


def test_one_click_queues_the_three_linked_runs(workspace, make_dataset, open_app_page):
    data = make_dataset(workspace / "datasets" / "tiny", per_class=6)
    at = open_app_page(PAGE, dataset=str(data))
    at.button(key="presenter_start").click().run()
    assert not at.exception, at.exception
    stories = list_stories()
    assert len(stories) == 1
    story = stories[0]
    assert [stage for stage, _ in story.ordered()] == ["scratch", "bottleneck", "finetune"]
    assert at.session_state["presenter_story"] == story.id
    assert at.button(key="presenter_start").disabled  # one story at a time
    assert at.button(key="presenter_stop")
    story.request_stop()  # the test trains nothing: the warm worker it started is stopped by conftest


@pytest.fixture
def story_ws(demo_story, monkeypatch):
    monkeypatch.setenv("FEWSHOT_WORKSPACE", str(demo_story))
    return demo_story


def test_a_finished_story_is_told_with_its_numbers_curves_and_photos(story_ws, open_app_page):
    story = list_stories()[0]
    at = open_app_page(PAGE)  # a new session: the story is found again from the runs folder
    metrics = at.metric
    assert len(metrics) == 3
    for metric, (_, run) in zip(metrics, story.ordered()):
        assert metric.value == f"{run.metrics()['val_accuracy']:.0%}"
    assert metrics[1].delta.endswith("points")
    text = shown(at)
    for title in ("From scratch", "Pretrained features", "Fine-tuned"):
        assert title in text
    assert re.search(r"\d+ photos? from scratch got wrong, pretrained features gets right", text)
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [trace["name"] for trace in chart["data"]] == ["From scratch", "Pretrained features", "Fine-tuned"]
    assert at.get("image")  # the photos the next stage gets right
    assert not at.button(key="presenter_start").disabled


def test_the_learning_curve_is_drawn_from_the_cache(story_ws, open_app_page, demo_dataset):
    at = open_app_page(PAGE)
    at.button(key="presenter_curve").click().run()
    assert not at.exception, at.exception
    text = shown(at)
    assert re.search(r"About \d+ photos per class are enough", text)
    assert "0 photos went through the network" in text
    labels = [m.label for m in at.metric]
    from core.datasets import scan_dataset

    n_train = len(scan_dataset(demo_dataset).split("train"))
    assert labels[3] == "1 photo per class" and labels[-1] == f"all ({n_train} photos)"
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    curve = next(c for c in charts if "photos per class" in c["layout"]["title"]["text"])
    mean = curve["data"][-1]
    assert mean["name"] == "mean of the draws" and mean["text"][0].endswith("%")
    assert any(shape["type"] == "line" for shape in curve["layout"]["shapes"])  # where more photos stop paying
