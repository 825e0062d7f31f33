"""The flat layout's train/validation/test split: stratified per class, seeded, and stable under edits."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from core.datasets.dataset import Item


def stable_rank(seed: int, path: Path) -> str:
    """An image's place in its class's shuffled order: a hash of the seed and its file name.

    Ranking by name (not by position in a shuffled list) keeps every image in its split when other images are
    added, removed or relabelled, so a retrain after a fix is compared on (almost) the same validation set.
    """
    return hashlib.sha1(f"{seed}:{path.name}".encode()).hexdigest()


def split_counts(n: int, val_split: float, test_split: float) -> tuple[int, int]:
    """(n_val, n_test) for a class of n images; at least one training image always remains."""
    n_test = round(n * test_split)
    n_val = round(n * val_split)
    if test_split > 0 and n_test == 0 and n >= 3:
        n_test = 1
    if val_split > 0 and n_val == 0 and n >= 2:
        n_val = 1
    while n_val + n_test >= n and (n_val or n_test):
        if n_test >= n_val and n_test:
            n_test -= 1
        else:
            n_val -= 1
    return n_val, n_test


def stratified_split(files: dict[str, list[Path]], val_split: float, test_split: float, seed: int) -> list[Item]:
    """Items of every class, each class split on its own by `split_counts`, in the natural order of their paths."""
    items: list[Item] = []
    for label, paths in files.items():
        ordered = sorted(paths, key=lambda p: (stable_rank(seed, p), str(p)))
        n_val, n_test = split_counts(len(ordered), val_split, test_split)
        for i, path in enumerate(ordered):
            split = "test" if i < n_test else "val" if i < n_test + n_val else "train"
            items.append(Item(path, label, split))
    return sorted(items, key=item_order)


def natural_key(path: Path) -> list:
    """fish2 before fish10: how people number their photos."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(path))]


def item_order(item: Item) -> tuple:
    """How a dataset's items are listed: by class, then by the natural order of their paths."""
    return item.label, natural_key(item.path)
