"""The recipe's story: the three stages of the Keras recipe as three linked runs on one split of one dataset.

    scratch      the small convnet from the pixels alone (the baseline)
    bottleneck   cached features of a frozen ImageNet network + a dense head (seconds)
    finetune     from that bottleneck run's head, the network's top block retrained

They are ordinary runs: queued in a row for the warm engine (the worker takes them oldest first, so the finetune
run starts only once the bottleneck run's head is on disk), each with its own folder, curves and predictions. What
makes them a story is `story` in each run's config.json ({"id", "stage", "index"}): the presenter page finds them
again after a reload, a closed tab or a restarted server, from the runs folder alone.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import pandas as pd

from core.config import TrainConfig
from core.runs import ACTIVE_STATES, Run, create_run, list_runs

STAGES = ("scratch", "bottleneck", "finetune")
STAGE_TITLES = {"scratch": "From scratch", "bottleneck": "Pretrained features", "finetune": "Fine-tuned"}
STAGE_LINES = {
    "scratch": "a small network learns from your pixels alone",
    "bottleneck": "a network trained on a million ImageNet photos describes yours; a small classifier learns "
                  "from those descriptions",
    "finetune": "then the top of that network is gently retrained on your photos",
}


@dataclass(frozen=True)
class StorySettings:
    """How long each stage trains (the recipe's defaults; tests and quick demos shorten them)."""
    scratch_epochs: int = 30
    bottleneck_epochs: int = 30
    finetune_epochs: int = 10


@dataclass
class Story:
    id: str
    runs: dict[str, Run]  # stage → its run (a stage deleted on the Runs page is missing)

    def ordered(self) -> list[tuple[str, Run]]:
        return [(stage, self.runs[stage]) for stage in STAGES if stage in self.runs]

    def states(self) -> dict[str, str]:
        return {stage: run.status().state for stage, run in self.ordered()}

    @property
    def active(self) -> bool:
        return any(state in ACTIVE_STATES for state in self.states().values())

    def current(self) -> tuple[str, Run] | None:
        """The stage being trained now, else the next one waiting."""
        waiting = None
        for stage, run in self.ordered():
            state = run.status().state
            if state == "running":
                return stage, run
            if state == "queued" and waiting is None:
                waiting = stage, run
        return waiting

    def histories(self) -> dict[str, pd.DataFrame]:
        return {STAGE_TITLES[stage]: run.history() for stage, run in self.ordered()}

    def request_stop(self) -> None:
        for _, run in self.ordered():
            if run.status().state in ACTIVE_STATES:
                run.request_stop()


def new_story_id() -> str:
    return f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def create_story(base: TrainConfig, settings: StorySettings = StorySettings(), name: str = "",
                 root: Path | None = None) -> Story:
    """The three run folders of a story on `base`'s dataset, split and backbone, in the order they must run.
    `root` (tests) puts them in another runs folder."""
    story_id = new_story_id()
    label = name or f"recipe {story_id}"
    configs = {
        "scratch": replace(base, mode="scratch", epochs=settings.scratch_epochs, from_run=None, augment_copies=0),
        "bottleneck": replace(base, mode="bottleneck", epochs=settings.bottleneck_epochs, from_run=None),
    }
    runs: dict[str, Run] = {}
    for index, stage in enumerate(STAGES):
        if stage == "finetune":  # from the bottleneck run's head: the story's link that training itself uses
            configs[stage] = replace(base, mode="finetune", finetune_epochs=settings.finetune_epochs,
                                     from_run=str(runs["bottleneck"].path), augment_copies=0)
        out = root / f"{story_id}-{index}-{stage}" if root else None
        runs[stage] = create_run(configs[stage], out, name=f"{label}: {stage}",
                                 story={"id": story_id, "stage": stage, "index": index})
    return Story(story_id, runs)


def start_story(base: TrainConfig, settings: StorySettings = StorySettings(), name: str = "") -> Story:
    """Create the story's runs and queue them in a row for the warm engine."""
    from core.engine import submit

    story = create_story(base, settings, name)
    for _, run in story.ordered():
        submit(run)
    return story


def list_stories(root: str | Path | None = None) -> list[Story]:
    """Every story in the runs folder, newest first (reads each run's config.json: a few small files)."""
    found: dict[str, dict[str, Run]] = {}
    for run in list_runs(root):
        link = run.story()
        if link and link.get("stage") in STAGES:
            found.setdefault(str(link["id"]), {})[link["stage"]] = run
    return [Story(story_id, runs) for story_id, runs in sorted(found.items(), reverse=True)]


def get_story(story_id: str, root: str | Path | None = None) -> Story | None:
    return next((story for story in list_stories(root) if story.id == story_id), None)


def stage_seconds(run: Run, now: float | None = None) -> float | None:
    """The stage's own time: from when it got the engine (after waiting for the stage before) to its results."""
    status = run.status()
    start = status.started_at
    if start is None:
        return None
    end = status.finished_at if status.finished_at is not None else (now or time.time())
    return max(0.0, end - start)


def summary(story: Story, now: float | None = None) -> list[dict]:
    """One row per stage: stage, title, run, state, val_accuracy, seconds, gain (accuracy points over the stage
    before, when both have one)."""
    rows, previous = [], None
    for stage, run in story.ordered():
        status = run.status()
        metrics = run.metrics() or {}
        accuracy = metrics.get("val_accuracy")
        gain = None if accuracy is None or previous is None else round(accuracy - previous, 4)
        rows.append({"stage": stage, "title": STAGE_TITLES[stage], "run": run.id, "state": status.state,
                     "val_accuracy": accuracy, "seconds": stage_seconds(run, now), "gain": gain,
                     "progress": float(status.progress or 0.0), "message": status.message or status.phase,
                     "error": status.error, "n_val": metrics.get("n_val")})
        if accuracy is not None:
            previous = accuracy
    return rows


def changed_photos(before: Run, after: Run) -> dict[str, pd.DataFrame]:
    """The validation photos `after` gets right that `before` got wrong ("fixed"), and the reverse ("broken"):
    path, label, before (its prediction), after (its prediction, confidence). Empty frames when either run has
    no predictions yet."""
    columns = ["path", "label", "before", "after", "confidence"]
    empty = {"fixed": pd.DataFrame(columns=columns), "broken": pd.DataFrame(columns=columns)}
    try:
        old, new = before.predictions(), after.predictions()
    except (OSError, ValueError):
        return empty
    if old is None or new is None:
        return empty
    old, new = old[old["split"] == "val"], new[new["split"] == "val"]
    both = old[["path", "label", "predicted", "correct"]].merge(
        new[["path", "predicted", "confidence", "correct"]], on="path", suffixes=("_before", "_after"))
    both = both.rename(columns={"predicted_before": "before", "predicted_after": "after"})
    fixed = both[~both["correct_before"] & both["correct_after"]][columns]
    broken = both[both["correct_before"] & ~both["correct_after"]][columns]
    return {"fixed": fixed.reset_index(drop=True), "broken": broken.reset_index(drop=True)}
