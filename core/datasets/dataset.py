"""The scanned dataset: its items (file, label, split), classes and skipped files, and what is worth fixing."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.errors import FewShotError

SPLITS = ("train", "val", "test")


class DatasetError(FewShotError):
    """A dataset that cannot be trained on; the message says what to change."""


@dataclass(frozen=True)
class Item:
    path: Path
    label: str
    split: str  # "train" | "val" | "test"


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


@dataclass
class Dataset:
    root: Path
    layout: str  # "flat" | "split"
    classes: list[str]
    items: list[Item]
    skipped: list[Skipped] = field(default_factory=list)

    def split(self, name: str) -> list[Item]:
        return [item for item in self.items if item.split == name]

    def label_index(self, label: str) -> int:
        return self.classes.index(label)

    def counts(self) -> pd.DataFrame:
        """Images per class (rows) and split (columns), with a total column."""
        frame = pd.DataFrame(0, index=self.classes, columns=list(SPLITS), dtype=int)
        for item in self.items:
            frame.loc[item.label, item.split] += 1
        if not frame["test"].any():
            frame = frame.drop(columns="test")
        frame["total"] = frame.sum(axis=1)
        frame.index.name = "class"
        return frame

    def summary(self) -> dict:
        return {
            "root": str(self.root),
            "layout": self.layout,
            "classes": self.classes,
            "counts": {c: {s: int(v) for s, v in row.items()} for c, row in self.counts().iterrows()},
            "skipped": [{"path": str(s.path), "reason": s.reason} for s in self.skipped],
        }


def dataset_warnings(ds: Dataset, few: int = 10, imbalance: float = 3.0) -> list[str]:
    """Problems worth fixing before training, each phrased as what to do."""
    counts = ds.counts()
    notes: list[str] = []
    totals = counts["total"]
    small = totals[totals < few]
    if len(small):
        notes.append(f"Few images in {', '.join(f'{c} ({n})' for c, n in small.items())}: "
                     f"add some if you can; {few}+ per class gives steadier results.")
    if totals.min() and totals.max() / totals.min() >= imbalance:
        notes.append(f"Unbalanced classes: {totals.idxmax()} has {totals.max()} images, {totals.idxmin()} only "
                     f"{totals.min()}. Training weights classes to compensate (class weights 'balanced').")
    if "val" in counts:
        no_val = counts.index[counts["val"] == 0].tolist()
        if no_val:
            notes.append(f"No validation image for {', '.join(no_val)}: their accuracy cannot be measured.")
    if ds.skipped:
        notes.append(f"{len(ds.skipped)} file(s) skipped (unreadable or not images): see the list below.")
    return notes
