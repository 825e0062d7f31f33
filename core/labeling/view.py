"""What the Label page lists: classes, labelled images and the unlabelled pool, read from the folders now."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.datasets import SPLIT_FOLDER_NAMES, Item, Skipped, class_folders, scan_class_folder
from core.labeling.places import LabelingError, layout_of, pool_folder


@dataclass
class LabelView:
    """A dataset as the Label page sees it; unlike `scan_dataset` it accepts 0 or 1 class (labelling starts so)."""
    root: Path
    layout: str                    # flat | split
    classes: list[str]
    labelled: list[Item]
    unlabelled: list[Path]
    skipped: list[Skipped] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {c: 0 for c in self.classes}
        for image in self.labelled:
            out[image.label] += 1
        return out


def label_view(dataset: str | Path) -> LabelView:
    """Classes, labelled images and the unlabelled pool, read from the folders now (cheap: checks are cached)."""
    root = Path(dataset).resolve()
    if not root.is_dir():
        raise LabelingError(f"{root} does not exist.")
    layout = layout_of(root)
    labelled: list[Item] = []
    skipped: list[Skipped] = []
    classes: set[str] = set()
    groups = layout.items() if layout else [("train", root)]
    for split, parent in groups:
        for folder in class_folders(parent):
            if not layout and folder.name.lower() in SPLIT_FOLDER_NAMES:
                continue  # a lone `test/` beside classes is not a class
            good, bad = scan_class_folder(folder)
            classes.add(folder.name)
            labelled += [Item(p, folder.name, split) for p in good]
            skipped += bad
    pool = pool_folder(root)
    unlabelled, bad = scan_class_folder(pool) if pool.is_dir() else ([], [])
    return LabelView(root, "split" if layout else "flat", sorted(classes), labelled, unlabelled, skipped + bad)


def unlabelled_images(dataset: str | Path) -> list[Path]:
    return label_view(dataset).unlabelled
