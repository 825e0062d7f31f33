"""The recipe's story: three linked runs on one split (scratch, bottleneck, finetune from that bottleneck run),
queued in a row for the warm engine, found again from the runs folder alone."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.config import TrainConfig
from core.runs import list_runs
from core.story import STAGES, changed_photos, create_story, get_story, list_stories, summary


@pytest.fixture
def story_ws(demo_story, monkeypatch) -> Path:
    monkeypatch.setenv("FEWSHOT_WORKSPACE", str(demo_story))
    return demo_story


def test_a_story_is_three_runs_linked_in_their_configs(workspace, tiny_dataset):
    base = TrainConfig(data=str(tiny_dataset), seed=3, val_split=0.25, epochs=7)
    story = create_story(base)
    runs = list_runs()
    assert len(runs) == 3
    links = {run.story()["stage"]: run.story() for run in runs}
    assert set(links) == set(STAGES)
    assert {link["id"] for link in links.values()} == {story.id}
    assert [links[s]["index"] for s in STAGES] == [0, 1, 2]
    configs = {stage: run.config() for stage, run in story.ordered()}
    assert [configs[s].mode for s in STAGES] == list(STAGES)
    # One split: the same data, shares and seed for all three.
    assert {(c.data, c.val_split, c.test_split, c.seed) for c in configs.values()} == {
        (str(tiny_dataset), 0.25, 0.0, 3)}
    assert configs["finetune"].from_run == str(story.runs["bottleneck"].path)
    assert configs["scratch"].from_run is None and configs["bottleneck"].from_run is None
    assert all(run.status().state == "queued" for _, run in story.ordered())

    # Found again from the folder alone (a reload, another tab), and told apart from a second story.
    other = create_story(base)
    found = list_stories()
    assert {s.id for s in found} == {story.id, other.id}
    again = get_story(story.id)
    assert {stage: run.id for stage, run in again.ordered()} == {stage: run.id for stage, run in story.ordered()}
    assert again.active and again.current()[0] == "scratch"


def test_the_recipe_on_the_demo_leaves_three_done_linked_runs(story_ws, demo_dataset):
    stories = list_stories()
    assert len(stories) == 1
    story = stories[0]
    assert [stage for stage, _ in story.ordered()] == list(STAGES)
    assert set(story.states().values()) == {"done"} and not story.active
    rows = {row["stage"]: row for row in summary(story)}
    assert all(row["val_accuracy"] is not None and row["seconds"] > 0 for row in rows.values())
    from core.datasets import scan_dataset

    n_val = len(scan_dataset(demo_dataset).split("val"))
    assert all(row["n_val"] == n_val for row in rows.values())  # one split: the same validation photos
    # The story the recipe tells: pretrained features beat the small convnet trained on ~100 photos.
    assert rows["bottleneck"]["val_accuracy"] > rows["scratch"]["val_accuracy"]
    assert rows["bottleneck"]["gain"] == pytest.approx(rows["bottleneck"]["val_accuracy"]
                                                       - rows["scratch"]["val_accuracy"])
    finetune = story.runs["finetune"]
    assert finetune.config().from_run == str(story.runs["bottleneck"].path)
    # It started from the bottleneck head: it changed the network, or no epoch beat that head and it kept it.
    assert finetune.was_finetuned() != finetune.metrics()["finetune"]["kept_start"]
    assert finetune.history()["stage"].tolist() == ["finetune"]  # 1 epoch
    assert story.runs["scratch"].history()["stage"].tolist() == ["scratch", "scratch"]  # 2 epochs
    for _, run in story.ordered():
        assert run.has_model()
    # The photos the bottleneck gets right that scratch got wrong: as many as the accuracy gained, and more.
    change = changed_photos(story.runs["scratch"], story.runs["bottleneck"])
    assert len(change["fixed"]) - len(change["broken"]) == round(rows["bottleneck"]["gain"] * n_val)
    assert len(change["fixed"]) > 0
    fixed = change["fixed"].iloc[0]
    assert fixed["label"] == fixed["after"] != fixed["before"]
