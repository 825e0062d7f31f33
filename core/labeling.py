"""Labelling: every change to a dataset is a file move, journalled, undoable, and safe against a crash.

The label of an image is the folder it sits in, so labelling is moving files:
* assign / relabel: `pool or class A` → `class B` (one `os.rename`: atomic within a filesystem);
* delete: → `<dataset>/.fewshot/trash/<op-id>/<name>` (restorable; nothing is ever erased);
* undo: the reverse move of the last action (an action is a batch: "assign 20 images" is undone at once).

The journal `<dataset>/.fewshot/journal.jsonl` is append-only and fsynced, one JSON line per step:

    {"id": …, "time": …, "op": "move", "src": "unlabelled/a.jpg", "dst": "cats/a.jpg", "batch": …,
     "state": "pending"}
    {"id": …, "state": "committed"}

The "pending" line is durable before the rename and "committed" is written after it. A crash in between leaves
a pending step that `recover()` settles by looking at the disk: the file is at `dst` → committed; still at `src`
→ rolled back. Either way exactly one copy of the file exists: a crash never loses or duplicates an image.
Paths in the journal are relative to the dataset, so a copied or moved dataset keeps its history.

Only datasets inside the workspace can be changed; the built-in demo is read-only (`make_editable_copy`).
"""
from __future__ import annotations

from core.errors import FewShotError
import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core import fsutil, images
from core.datasets import (RESERVED_FOLDERS, SPLIT_FOLDER_NAMES, DatasetError, Skipped, detect_layout,
                           scan_class_folder, validate_class_name)
from core.datasets.importing import (ImportReport, dataset_name, list_datasets, save_uploads,
                                     unique_path)
from core.workspace import DEMO_DATASET, PathError, datasets_dir, ensure_allowed

try:  # advisory lock between processes (and between threads: each open() is its own lock owner)
    import fcntl
except ImportError:  # pragma: no cover - Windows: the in-process lock below still serialises the app's sessions
    fcntl = None

META_DIR = ".fewshot"
JOURNAL_NAME = "journal.jsonl"
ORIGIN_NAME = "origin.json"
POOL_NAMES = ("unlabelled", "unlabeled")
OPS = ("move", "delete", "restore", "undo")
UNDOABLE = ("move", "delete", "restore")
_thread_lock = threading.RLock()


class LabelingError(FewShotError):
    """A labelling change that cannot be made; the message says why and what to do."""


@dataclass(frozen=True)
class Op:
    """One file move, as recorded in the journal. `src`/`dst` are relative to the dataset root (POSIX)."""
    id: str
    time: float
    op: str                 # move | delete | restore | undo
    src: str
    dst: str
    batch: str              # the user action this step belongs to (undo works per batch)
    state: str = "pending"  # pending | committed | rolled_back | missing | skipped
    ref: str | None = None  # undo: the step it reverses; restore: the delete it reverses
    note: str = ""

    @property
    def done(self) -> bool:
        return self.state == "committed"

    def describe(self) -> str:
        verb = {"move": "moved", "delete": "deleted", "restore": "restored", "undo": "undid"}[self.op]
        return f"{verb} {self.src} → {self.dst}"


# ---------------------------------------------------------------------------------------------- where things are


def meta_dir(root: Path) -> Path:
    return Path(root) / META_DIR


def journal_path(root: Path) -> Path:
    return meta_dir(root) / JOURNAL_NAME


def trash_dir(root: Path) -> Path:
    return meta_dir(root) / "trash"


def is_demo(path: str | Path) -> bool:
    resolved, demo = Path(path).resolve(), DEMO_DATASET.resolve()
    return resolved == demo or demo in resolved.parents


def editable_root(dataset: str | Path) -> Path:
    """The resolved dataset folder, or LabelingError if the app may not change it."""
    root = Path(dataset).expanduser().resolve()
    if is_demo(root):
        raise LabelingError("The built-in demo dataset is read-only. Make an editable copy of it in the workspace "
                            "first (the Label page has a button for it).")
    if root.parent != datasets_dir():  # a dataset is a folder directly in datasets/ (not one of its classes)
        raise LabelingError(f"{root} is not a dataset in the workspace ({datasets_dir()}); only those can be "
                            f"changed here.")
    if not root.is_dir():
        raise LabelingError(f"{root} does not exist (any more).")
    return root


def is_editable(dataset: str | Path) -> bool:
    try:
        editable_root(dataset)
    except LabelingError:
        return False
    return True


def pool_folder(root: Path) -> Path:
    """The unlabelled pool: an existing `unlabelled/` (or `unlabeled/`) folder, else where one would be."""
    for name in POOL_NAMES:
        if (root / name).is_dir():
            return root / name
    return root / POOL_NAMES[0]


def _layout(root: Path) -> dict[str, Path] | None:
    try:
        return detect_layout(root)
    except DatasetError as exc:
        raise LabelingError(str(exc)) from None


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _inside(root: Path, path: str | Path, allow_meta: bool = False) -> Path:
    """`path` (absolute, or relative to root) as an absolute path inside root; refuses anything else."""
    path = Path(path)
    candidate = path if path.is_absolute() else root / path
    if candidate.is_symlink():
        raise LabelingError(f"{path} is a symbolic link; the app only moves real files.")
    resolved = candidate.resolve()
    if root not in resolved.parents:
        raise LabelingError(f"{path} is outside the dataset {root.name}; refusing to touch it.")
    if not allow_meta and META_DIR in resolved.relative_to(root).parts:
        raise LabelingError(f"{path} is in the app's own bookkeeping folder; use restore instead.")
    return resolved


def _split_of(root: Path, layout: dict[str, Path] | None, path: Path) -> str:
    """The split folder an image sits in (split layout), 'train' otherwise."""
    if layout:
        first = path.relative_to(root).parts[0]
        for split, folder in layout.items():
            if folder.name == first:
                return split
    return "train"


def class_folder(root: Path, class_name: str, split: str = "train") -> Path:
    """Where images of `class_name` live: `root/<class>`, or `root/<split folder>/<class>` in the split layout."""
    name = validate_class_name(class_name)
    layout = _layout(root)
    return (layout.get(split, layout["train"]) if layout else root) / name


# ---------------------------------------------------------------------------------------------- what is there


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: str
    split: str


@dataclass
class LabelView:
    """A dataset as the Label page sees it; unlike `scan_dataset` it accepts 0 or 1 class (labelling starts so)."""
    root: Path
    layout: str                    # flat | split
    classes: list[str]
    labelled: list[LabelledImage]
    unlabelled: list[Path]
    skipped: list[Skipped] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {c: 0 for c in self.classes}
        for image in self.labelled:
            out[image.label] += 1
        return out

    def of_class(self, label: str) -> list[Path]:
        return [image.path for image in self.labelled if image.label == label]


def _folders(parent: Path) -> list[Path]:
    return sorted(p for p in parent.iterdir() if p.is_dir() and not p.is_symlink() and not images.is_hidden(p.name)
                  and p.name.lower() not in RESERVED_FOLDERS)


def label_view(dataset: str | Path) -> LabelView:
    """Classes, labelled images and the unlabelled pool, read from the folders now (cheap: checks are cached)."""
    root = Path(dataset).resolve()
    if not root.is_dir():
        raise LabelingError(f"{root} does not exist.")
    layout = _layout(root)
    labelled: list[LabelledImage] = []
    skipped: list[Skipped] = []
    classes: set[str] = set()
    groups = layout.items() if layout else [("train", root)]
    for split, parent in groups:
        for folder in _folders(parent):
            if not layout and folder.name.lower() in SPLIT_FOLDER_NAMES:
                continue  # a lone `test/` beside classes is not a class
            good, bad = scan_class_folder(folder)
            classes.add(folder.name)
            labelled += [LabelledImage(p, folder.name, split) for p in good]
            skipped += bad
    pool = pool_folder(root)
    unlabelled, bad = scan_class_folder(pool) if pool.is_dir() else ([], [])
    return LabelView(root, "split" if layout else "flat", sorted(classes), labelled, unlabelled, skipped + bad)


def unlabelled_images(dataset: str | Path) -> list[Path]:
    return label_view(dataset).unlabelled


def add_unlabelled_uploads(dataset: str | Path, files: Iterable[tuple[str, bytes]]) -> ImportReport:
    """Save (filename, bytes) uploads into the dataset's unlabelled pool; unreadable files are skipped."""
    root = editable_root(dataset)
    pool = pool_folder(root)
    pool.mkdir(exist_ok=True)
    return save_uploads(pool, files)


def make_editable_copy(source: str | Path, name: str) -> Path:
    """Copy a dataset (e.g. the built-in demo) into the workspace under a new name; returns the copy's folder.

    The app's bookkeeping (`.fewshot/`) is not copied: the copy starts with an empty history.
    """
    try:
        source = ensure_allowed(source)  # never copy (read) a folder outside the workspace and the demo
    except PathError as exc:
        raise LabelingError(str(exc)) from None
    if not source.is_dir():
        raise LabelingError(f"{source} is not a folder.")
    try:
        target = unique_path(datasets_dir(), dataset_name(name))
    except DatasetError as exc:
        raise LabelingError(str(exc)) from None
    staging = target.with_name(f".copy-{target.name}-{secrets.token_hex(3)}")
    try:
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns(META_DIR), symlinks=True)
        # Remember the source: runs trained on it can then fix and retrain on this copy (`working_copy`).
        fsutil.atomic_write_json(meta_dir(staging) / ORIGIN_NAME, {"source": str(source), "copied_at": time.time()})
        staging.rename(target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise LabelingError(f"could not copy {source.name}: {exc.strerror or exc}") from None
    return target


def origin_of(dataset: str | Path) -> Path | None:
    """The dataset this one was copied from by `make_editable_copy`, if any."""
    data = fsutil.read_json(meta_dir(Path(dataset)) / ORIGIN_NAME, None)
    return Path(data["source"]) if isinstance(data, dict) and data.get("source") else None


def working_copy(dataset: str | Path, prefer: str | Path | None = None) -> Path | None:
    """Where changes to `dataset` can be made: itself when editable, else an editable copy of it in the workspace
    (`prefer` if it is one, else the newest), else None."""
    root = Path(dataset).resolve()
    if is_editable(root):
        return root
    copies = [p.resolve() for p in list_datasets() if origin_of(p) == root]
    if prefer is not None and Path(prefer).resolve() in copies:
        return Path(prefer).resolve()
    return copies[0] if copies else None


def counterpart(dataset: str | Path, path: str | Path, copy: str | Path) -> Path | None:
    """Where an image of `dataset` is now in its working copy `copy` (following the copy's journal)."""
    try:
        rel = Path(path).resolve().relative_to(Path(dataset).resolve())
    except ValueError:
        return None
    return locate(copy, Path(copy).resolve() / rel)


def label_of(dataset: str | Path, path: str | Path) -> str | None:
    """The class an image is filed under (its folder), None for the pool, the trash or outside the dataset."""
    root = Path(dataset).resolve()
    try:
        parts = Path(path).resolve().relative_to(root).parts
    except ValueError:
        return None
    if len(parts) < 2 or parts[0] == META_DIR or parts[0].lower() in POOL_NAMES:
        return None
    layout = _layout(root)
    if layout and parts[0] in {folder.name for folder in layout.values()}:
        return parts[1] if len(parts) > 2 else None
    return parts[0]


# ---------------------------------------------------------------------------------------------- the journal


def _new_id() -> str:
    return f"{time.time_ns() // 1_000_000:x}-{secrets.token_hex(3)}"


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One writer at a time per dataset: the app's sessions are threads, a CLI would be another process."""
    meta_dir(root).mkdir(exist_ok=True)
    with _thread_lock, open(meta_dir(root) / "lock", "a") as fh:
        if fcntl:
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _append(root: Path, record: dict) -> None:
    """Append one JSON line and fsync it. A torn last line (a crash mid-write) is closed off first."""
    path = journal_path(root)
    path.parent.mkdir(exist_ok=True)
    with open(path, "a+b") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell():
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
        fh.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
        fh.flush()
        os.fsync(fh.fileno())


def _read(root: Path) -> list[Op]:
    """The journal folded into one Op per step, in the order steps began. Damaged lines are ignored."""
    path = journal_path(root)
    if not path.exists():
        return []
    records: dict[str, dict] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or "id" not in record:
                continue
            if record["id"] in records:
                records[record["id"]].update(record)
            elif record.get("op") in OPS:
                records[record["id"]] = record
    names = {f.name for f in Op.__dataclass_fields__.values()}
    return [Op(**{k: v for k, v in r.items() if k in names}) for r in records.values()]


def history(dataset: str | Path) -> list[Op]:
    """Every step ever recorded for the dataset, newest first."""
    return list(reversed(_read(Path(dataset).resolve())))


def _settle(root: Path, op: Op) -> tuple[str, str]:
    """What a pending step became, judged from the disk: (state, note)."""
    src, dst = root / op.src, root / op.dst
    src_there, dst_there = src.exists(), dst.exists()
    if dst_there and not src_there:
        return "committed", "completed after an interruption"
    if src_there:
        # The rename never happened (it is atomic). If dst exists too, it is another file: leave both alone.
        return "rolled_back", "interrupted before the move; the file stayed where it was"
    return "missing", "the file was at neither place (removed outside the app?)"


def _recover_locked(root: Path) -> list[str]:
    notes = []
    for op in _read(root):
        if op.state != "pending":
            continue
        state, note = _settle(root, op)
        _append(root, {"id": op.id, "state": state, "note": note})
        if state != "committed" and op.op == "delete":
            _remove_empty_dirs((root / op.dst).parent, stop=trash_dir(root))
        notes.append(f"{op.describe()}: {note}")
    return notes


def recover(dataset: str | Path) -> list[str]:
    """Settle steps a crash left pending (see the module docstring). Returns a note per step settled.

    Idempotent and cheap; the Label page calls it on every visit and every change calls it first.
    """
    root = Path(dataset).resolve()
    if not journal_path(root).exists():
        return []
    with _locked(root):
        return _recover_locked(root)


def _remove_empty_dirs(folder: Path, stop: Path) -> None:
    """Remove `folder` and its empty parents up to (not including) `stop`; never a folder with anything in it."""
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def _move(root: Path, op: str, src: Path, dst: Path, batch: str, ref: str | None = None) -> Op:
    """Journal 'pending' → rename → journal 'committed'. An OSError is recorded and raised as LabelingError."""
    step = Op(_new_id(), time.time(), op, _rel(root, src), _rel(root, dst), batch, "pending", ref)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():  # unique names are chosen just before; this only guards against a racing writer
        raise LabelingError(f"{step.dst} already exists; refusing to overwrite it.")
    _append(root, asdict(step))
    try:
        os.rename(src, dst)
    except OSError as exc:
        _append(root, {"id": step.id, "state": "rolled_back", "note": str(exc)})
        raise LabelingError(f"could not move {step.src}: {exc.strerror or exc}") from None
    _append(root, {"id": step.id, "state": "committed"})
    return Op(**{**asdict(step), "state": "committed"})


def _tidy_source(root: Path, src: Path) -> None:
    """A class folder left empty by a move is removed: an empty class would stop training ("no usable image").

    Only the class folder (and empty subfolders of it) goes; never the dataset, a split folder or the pool.
    """
    parts = src.relative_to(root).parts
    if parts[0] == META_DIR:
        return
    pool = pool_folder(root)
    if pool in src.parents:
        stop = pool
    else:
        try:
            layout = _layout(root)
        except LabelingError:
            return
        split_folders = {folder.name for folder in layout.values()} if layout else set()
        stop = root / parts[0] if parts[0] in split_folders else root
    _remove_empty_dirs(src.parent, stop=stop)


def _apply(root: Path, moves: Sequence[tuple[str, Path, Path, str, str | None]], batch: str | None) -> list[Op]:
    """Carry out (op, src, destination folder, file name, ref) steps as one batch, under the lock, after recovery.

    The destination name gets a -2, -3… suffix when taken: a move never overwrites an image.
    """
    batch = batch or _new_id()
    done: list[Op] = []
    with _locked(root):
        _recover_locked(root)
        for op, src, folder, name, ref in moves:
            if not src.is_file():
                raise LabelingError(f"{_rel(root, src)} is not there any more (already moved or deleted?).")
            done.append(_move(root, op, src, unique_path(folder, name), batch, ref))
            _tidy_source(root, src)
    return done


# ---------------------------------------------------------------------------------------------- user actions


def _image_paths(root: Path, paths: Iterable[str | Path]) -> list[Path]:
    out, seen = [], set()
    for path in paths:
        resolved = _inside(root, path)
        if not resolved.is_file():
            raise LabelingError(f"{resolved.name} is not there any more (already moved or deleted?).")
        if resolved not in seen:
            seen.add(resolved)
            out.append(resolved)
    return out


def move_to_class(dataset: str | Path, paths: Iterable[str | Path], class_name: str,
                  batch: str | None = None) -> list[Op]:
    """Assign (unlabelled) or relabel (labelled) images to `class_name`, created if new. One undoable action.

    In the split layout an image keeps its split (`validation/cats/x.jpg` → `validation/dogs/x.jpg`); pool images
    join `train/`. Images already in that class are left where they are. Names never collide: `x-2.jpg`.
    """
    root = editable_root(dataset)
    try:
        name = validate_class_name(class_name)
    except DatasetError as exc:
        raise LabelingError(str(exc)) from None
    layout = _layout(root)
    moves = []
    for src in _image_paths(root, paths):
        folder = class_folder(root, name, _split_of(root, layout, src))
        if src.parent == folder:
            continue
        moves.append(("move", src, folder, src.name, None))
    return _apply(root, moves, batch)


def move_to_pool(dataset: str | Path, paths: Iterable[str | Path]) -> list[Op]:
    """Take images out of their class, back to the unlabelled pool (to decide later)."""
    root = editable_root(dataset)
    pool = pool_folder(root)
    moves = [("move", src, pool, src.name, None) for src in _image_paths(root, paths) if src.parent != pool]
    return _apply(root, moves, None)


def delete_images(dataset: str | Path, paths: Iterable[str | Path]) -> list[Op]:
    """Move images to the dataset's trash (`.fewshot/trash/<id>/`); `restore_from_trash` or `undo` bring them back."""
    root = editable_root(dataset)
    moves = [("delete", src, trash_dir(root) / _new_id(), src.name, None) for src in _image_paths(root, paths)]
    return _apply(root, moves, None)


def _undo_stack(ops: list[Op]) -> list[list[Op]]:
    """Batches that can still be undone, most recent first; each batch's committed undoable steps."""
    undone = {op.ref for op in ops if op.op == "undo" and op.state in ("committed", "skipped")}
    batches: dict[str, list[Op]] = {}
    for op in ops:
        if op.op in UNDOABLE and op.done and op.id not in undone:
            batches.setdefault(op.batch, []).append(op)
    return list(reversed(list(batches.values())))


def can_undo(dataset: str | Path) -> int:
    """How many actions can be undone."""
    return len(_undo_stack(_read(Path(dataset).resolve())))


def undo(dataset: str | Path, n: int = 1) -> list[Op]:
    """Reverse the last `n` actions (each a batch of moves), newest first. Returns the undo steps.

    A file that was since removed outside the app is skipped (recorded), so one lost file cannot block undo.
    """
    root = editable_root(dataset)
    done: list[Op] = []
    with _locked(root):
        _recover_locked(root)
        for batch in _undo_stack(_read(root))[:n]:
            undo_batch = _new_id()
            for op in reversed(batch):
                current = _inside(root, op.dst, allow_meta=True)  # the journal is data: check it stays inside
                original = _inside(root, op.src, allow_meta=True)
                if not current.is_file():
                    _append(root, asdict(Op(_new_id(), time.time(), "undo", op.dst, op.src, undo_batch, "skipped",
                                            op.id, "the file was not there any more")))
                    continue
                target = original if not original.exists() else unique_path(original.parent, original.name)
                done.append(_move(root, "undo", current, target, undo_batch, op.id))
                if op.op == "delete":
                    _remove_empty_dirs(current.parent, stop=trash_dir(root))
                else:
                    _tidy_source(root, current)
    return done


@dataclass(frozen=True)
class TrashItem:
    op_id: str            # the delete step
    path: Path            # where it is in the trash
    original: Path        # where it was
    time: float


def trash_items(dataset: str | Path) -> list[TrashItem]:
    """Deleted images still in the trash, most recently deleted first."""
    root = Path(dataset).resolve()
    items = [TrashItem(op.id, root / op.dst, root / op.src, op.time) for op in history(root)
             if op.op == "delete" and op.done and (root / op.dst).is_file()]
    return items


def restore_from_trash(dataset: str | Path, op_ids: Iterable[str] | None = None) -> list[Op]:
    """Put deleted images back where they were (all of them when `op_ids` is None). One undoable action."""
    root = editable_root(dataset)
    wanted = None if op_ids is None else set(op_ids)
    moves = []
    for item in trash_items(root):
        if wanted is None or item.op_id in wanted:
            # The journal is data: never trust it to point inside the dataset.
            original = _inside(root, item.original)
            if trash_dir(root) not in _inside(root, item.path, allow_meta=True).parents:
                raise LabelingError(f"journal entry {item.op_id} does not point into the trash; not restoring it.")
            moves.append(("restore", item.path, original.parent, original.name, item.op_id))
    return _apply(root, moves, None)


def locate(dataset: str | Path, path: str | Path) -> Path | None:
    """Where an image is now, following the journal's committed moves (e.g. a prediction's file after a fix).

    Returns the current path (inside `.fewshot/trash/` if deleted), or None when it is nowhere to be found.
    """
    root = Path(dataset).resolve()
    try:
        current = _rel(root, Path(path).resolve())
    except ValueError:
        return None
    for op in _read(root):
        if op.done and op.src == current:
            current = op.dst
    found = root / current
    return found if found.exists() else None


def in_trash(dataset: str | Path, path: str | Path) -> bool:
    return trash_dir(Path(dataset).resolve()) in Path(path).resolve().parents


# ---------------------------------------------------------------------------------------------- model-assisted

_predictions: dict[tuple, list[float]] = {}   # (model file, its mtime, image, size, mtime) → probabilities
_models: dict[tuple[str, int], object] = {}
_predict_lock = threading.Lock()


def _load_cached_model(model_path: Path):
    from core.export import load_model

    key = (str(model_path), model_path.stat().st_mtime_ns)
    if key not in _models:
        if len(_models) >= 2:
            _models.pop(next(iter(_models)))
        _models[key] = load_model(model_path)
    return _models[key]


def predict_pool(run, paths: Sequence[str | Path]) -> pd.DataFrame:
    """The run's prediction for each image: path, predicted, confidence, margin, p_<class>…, least confident
    first (the images worth labelling first). Unreadable images are left out.

    Predictions are cached per image file, so labelling one image does not predict the rest again.
    """
    from core.evaluate import predictions_frame
    from core.export import ExportError, predict_files

    model_path = Path(run.file("model.keras"))
    labels = run.labels()
    if not model_path.exists() or not labels:
        raise LabelingError(f"run {run.id} has no saved model (not finished, or failed); pick a finished run.")
    model_key = (str(model_path), model_path.stat().st_mtime_ns)
    keys, known = [], []
    for path in map(Path, paths):
        try:
            st = path.stat()
        except OSError:
            keys.append(None)
            continue
        keys.append(model_key + (str(path), st.st_size, st.st_mtime_ns))
    with _predict_lock:
        missing = [i for i, key in enumerate(keys) if key is not None and key not in _predictions]
        if missing:
            try:
                model = _load_cached_model(model_path)
            except ExportError as exc:
                raise LabelingError(str(exc)) from None
            probs, _failed = predict_files(model, [paths[i] for i in missing])
            if len(_predictions) > 100_000:
                _predictions.clear()
            for i, row in zip(missing, probs):
                _predictions[keys[i]] = row.tolist()
        for i, key in enumerate(keys):
            row = _predictions.get(key) if key is not None else None
            if row is not None and all(v == v for v in row):  # NaN row = unreadable image
                known.append((i, row))
    if not known:
        return pd.DataFrame(columns=["path", "predicted", "confidence", "margin"] + [f"p_{c}" for c in labels])
    probs = np.array([row for _, row in known], dtype=float)
    frame = predictions_frame([str(paths[i]) for i, _ in known], None, probs, labels)
    frame = frame.drop(columns=["split", "label", "correct"])
    return frame.sort_values(["confidence", "path"], ascending=True, kind="stable").reset_index(drop=True)


def accept_predictions(dataset: str | Path, frame: pd.DataFrame, threshold: float) -> list[Op]:
    """Move every unlabelled image predicted with confidence ≥ `threshold` to its predicted class: one action,
    undone by one undo. Images no longer in the pool (labelled meanwhile) are left alone."""
    if not 0.0 < threshold <= 1.0:
        raise LabelingError(f"threshold {threshold} must be in (0, 1].")
    root = editable_root(dataset)
    pool = pool_folder(root).resolve()
    chosen = frame[(frame["confidence"] >= threshold) & frame["predicted"].notna()]
    by_class: dict[str, list[Path]] = {}
    for path, label in zip(chosen["path"], chosen["predicted"]):
        path = Path(path).resolve()
        if pool in path.parents and path.is_file():
            by_class.setdefault(str(label), []).append(path)
    batch = _new_id()
    done: list[Op] = []
    for label, paths in sorted(by_class.items()):
        done += move_to_class(root, paths, label, batch=batch)
    return done
