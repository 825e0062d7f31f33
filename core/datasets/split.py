"""The flat layout's train/validation/test split: seeded, per image, and stable under edits."""
from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path

from core import images
from core.datasets.dataset import Item

_HASH_DIGITS = 15  # 60 bits of the digest: far finer than any share a person sets


@lru_cache(maxsize=100_000)
def _content_memo(path: str, size: int, mtime_ns: int) -> str:
    return images.content_hash(path)


def content_key(path: Path) -> str:
    """The file's content hash, memoised on (path, size, mtime) so the pages can rescan every rerun for free."""
    st = path.stat()
    return _content_memo(str(path), st.st_size, st.st_mtime_ns)


def split_position(seed: int, key: str) -> float:
    """Where an image falls in [0, 1): below test_split it is a test image, then validation, then training.

    `key` is the image's content hash, so its split depends on the image alone (and the seed): never on how many
    images its class has, nor on its name or folder. It keeps its split when others are added or removed, when it
    is relabelled (moved to another class folder, renamed there if the name is taken), and identical copies share
    one split (no copy in training of a validation photo). A retrain after a fix is measured on the same
    validation photos. The price: each share drifts a little from the fraction asked (`split_share_note`).
    """
    return int(hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()[:_HASH_DIGITS], 16) / 16 ** _HASH_DIGITS


def split_of(position: float, val_split: float, test_split: float) -> str:
    return "test" if position < test_split else "val" if position < test_split + val_split else "train"


def stratified_split(files: dict[str, list[Path]], val_split: float, test_split: float, seed: int) -> list[Item]:
    """Items of every class, each image in the split of its `split_position`, in the natural order of their paths.

    The one exception keeps every class trainable: a class whose images all fell into validation/test gets back
    the one nearest to the training share (the largest position) as a training image.
    """
    items: list[Item] = []
    for label, paths in files.items():
        placed = [(split_position(seed, content_key(p)), p) for p in paths]
        splits = [split_of(pos, val_split, test_split) for pos, _ in placed]
        if placed and "train" not in splits:
            splits[max(range(len(placed)), key=lambda i: (placed[i][0], str(placed[i][1])))] = "train"
        items.extend(Item(path, label, split) for (_, path), split in zip(placed, splits))
    return sorted(items, key=item_order)


def split_share_note(items: list[Item], val_split: float, test_split: float = 0.0) -> str | None:
    """A sentence for the page when the shares that came out differ from those asked by a point or more, else None.

    Each image's split is drawn on its own (a hash), so with few photos the shares wander from the fraction set."""
    n = len(items)
    if not n:
        return None
    parts = []
    for split, asked, what in (("val", val_split, "validation"), ("test", test_split, "test")):
        got = sum(it.split == split for it in items)
        if asked > 0 and abs(got / n - asked) >= 0.01:
            parts.append(f"{got} of {n} photos ({got / n:.0%}) are in {what}, for {asked:.0%} asked")
    if not parts:
        return None
    return ("; ".join(parts) + ". Each photo's split comes from its own content (a hash), so it never changes "
            "when other photos are added or relabelled; the price is that the shares drift a little from those asked.")


def natural_key(path: Path) -> list:
    """fish2 before fish10: how people number their photos."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(path))]


def item_order(item: Item) -> tuple:
    """How a dataset's items are listed: by class, then by the natural order of their paths."""
    return item.label, natural_key(item.path)
