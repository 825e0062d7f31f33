"""'Retrain with my fixes', like for like: the retrain's settings (the source run's, with what must differ said
up front) and the before/after comparison on the same validation photos, each under its corrected label.

No TensorFlow here: the pages call both before and after a retrain.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from core.config import TrainConfig
from core.datasets import content_key
from core.runs import Run

MODE_WORDS = {"scratch": "a small network trained from scratch", "bottleneck": "pretrained features + a small head",
              "finetune": "pretrained features + head, then fine-tuning the network's top block"}


@dataclass
class RetrainPlan:
    config: TrainConfig
    differences: list[str]  # what differs from the source run besides the dataset's fixes, in plain words

    def describe(self) -> str:
        """One sentence for the button's help: what the retrain repeats and, where it must, what it changes."""
        cfg = self.config
        what = MODE_WORDS.get(cfg.mode, cfg.mode) + ("" if cfg.mode == "scratch" else f" ({cfg.backbone})")
        text = f"Repeats this run: {what}, with the same settings."
        if self.differences:
            text += " One difference: " + "; ".join(self.differences) + "."
        return text


def retrain_plan(source: Run, data: str | Path | None = None) -> RetrainPlan:
    """The source run's mode, backbone and settings on the dataset as it is now (`data`: e.g. the editable copy
    of the read-only demo the fixes were made in). A fine-tune that started from another run's head starts from a
    fresh head instead: that head was trained on the labels before the fixes."""
    cfg = source.config()
    differences = []
    if cfg.from_run:
        differences.append(f"it trains a fresh head on the fixed labels before fine-tuning, instead of starting from "
                           f"the head of run {Path(cfg.from_run).name}")
    return RetrainPlan(replace(cfg, from_run=None, **({"data": str(data)} if data else {})), differences)


@dataclass
class SamePhotoComparison:
    """Validation accuracy before and after a retrain on the photos in both runs' validation sets, each photo
    judged against its label after the fixes (so the old model is marked wrong where its old label was)."""
    n_photos: int
    before_accuracy: float
    after_accuracy: float
    n_relabelled: int     # of those photos, how many carry a different label now
    n_only_before: int    # validation photos of the old run not in the new one's (deleted, or moved to training)
    n_only_after: int     # and the other way round (new photos, mostly)

    def sentence(self) -> str:
        text = (f"validation accuracy {self.after_accuracy:.0%} (was {self.before_accuracy:.0%}) on the same "
                f"{self.n_photos} photos")
        if self.n_relabelled:
            text += f", {self.n_relabelled} of them relabelled, all judged by their corrected labels"
        return text


def _keyed(frame: pd.DataFrame) -> pd.DataFrame:
    """Validation rows keyed by content hash: recorded at training time, else read from the file if still there."""
    val = frame[frame["split"] == "val"].copy()
    recorded = val["content"] if "content" in val else pd.Series(None, index=val.index, dtype=object)

    def key(row_path: str, known) -> str | None:
        if isinstance(known, str) and known:
            return known
        try:
            return content_key(Path(row_path))
        except OSError:
            return None
    val["key"] = [key(p, k) for p, k in zip(val["path"], recorded)]
    return val.dropna(subset=["key"]).drop_duplicates("key").set_index("key")


def compare_on_same_photos(before: Run, after: Run) -> SamePhotoComparison | None:
    """None when either run has no validation predictions or they share no photo."""
    old, new = before.predictions(), after.predictions()
    if old is None or new is None or old.empty or new.empty:
        return None
    old, new = _keyed(old), _keyed(new)
    common = old.index.intersection(new.index)
    if not len(common):
        return None
    truth = new.loc[common, "label"]
    return SamePhotoComparison(
        n_photos=len(common),
        before_accuracy=float((old.loc[common, "predicted"] == truth).mean()),
        after_accuracy=float((new.loc[common, "predicted"] == truth).mean()),
        n_relabelled=int((old.loc[common, "label"] != truth).sum()),
        n_only_before=len(old.index.difference(new.index)), n_only_after=len(new.index.difference(old.index)))
