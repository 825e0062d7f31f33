"""The journal: every change to a dataset is a file move, journalled, undoable, and safe against a crash.

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

Which moves a user action makes is decided in `actions`; this module carries them out (`apply_moves`), reverses
them (`undo`, `restore_from_trash`) and follows them (`locate`).
"""
from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from core.datasets.importing import unique_path
from core.labeling.places import (
    META_DIR,
    LabelingError,
    editable_root,
    inside,
    journal_path,
    layout_of,
    meta_dir,
    pool_folder,
    rel,
    trash_dir,
)

try:  # advisory lock between processes (and between threads: each open() is its own lock owner)
    import fcntl
except ImportError:  # pragma: no cover - Windows: the in-process lock below still serialises the app's sessions
    fcntl = None

OPS = ("move", "delete", "restore", "undo")
UNDOABLE = ("move", "delete", "restore")
_thread_lock = threading.RLock()


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


# ---------------------------------------------------------------------------------------------- the journal


def new_id() -> str:
    return f"{time.time_ns() // 1_000_000:x}-{secrets.token_hex(3)}"


@contextmanager
def locked(root: Path) -> Iterator[None]:
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


def append(root: Path, record: dict) -> None:
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


def read(root: Path) -> list[Op]:
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
    return list(reversed(read(Path(dataset).resolve())))


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


def recover_locked(root: Path) -> list[str]:
    """`recover`, for a caller that already holds the dataset's lock (every change recovers first)."""
    notes = []
    for op in read(root):
        if op.state != "pending":
            continue
        state, note = _settle(root, op)
        append(root, {"id": op.id, "state": state, "note": note})
        if state != "committed" and op.op == "delete":
            remove_empty_dirs((root / op.dst).parent, stop=trash_dir(root))
        notes.append(f"{op.describe()}: {note}")
    return notes


def recover(dataset: str | Path) -> list[str]:
    """Settle steps a crash left pending (see the module docstring). Returns a note per step settled.

    Idempotent and cheap; the Label page calls it on every visit and every change calls it first.
    """
    root = Path(dataset).resolve()
    if not journal_path(root).exists():
        return []
    with locked(root):
        return recover_locked(root)


def remove_empty_dirs(folder: Path, stop: Path) -> None:
    """Remove `folder` and its empty parents up to (not including) `stop`; never a folder with anything in it."""
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def move_file(root: Path, op: str, src: Path, dst: Path, batch: str, ref: str | None = None) -> Op:
    """Journal 'pending' → rename → journal 'committed'. An OSError is recorded and raised as LabelingError."""
    step = Op(new_id(), time.time(), op, rel(root, src), rel(root, dst), batch, "pending", ref)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():  # unique names are chosen just before; this only guards against a racing writer
        raise LabelingError(f"{step.dst} already exists; refusing to overwrite it.")
    append(root, asdict(step))
    try:
        os.rename(src, dst)
    except OSError as exc:
        append(root, {"id": step.id, "state": "rolled_back", "note": str(exc)})
        raise LabelingError(f"could not move {step.src}: {exc.strerror or exc}") from None
    append(root, {"id": step.id, "state": "committed"})
    return Op(**{**asdict(step), "state": "committed"})


def tidy_source(root: Path, src: Path) -> None:
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
            layout = layout_of(root)
        except LabelingError:
            return
        split_folders = {folder.name for folder in layout.values()} if layout else set()
        stop = root / parts[0] if parts[0] in split_folders else root
    remove_empty_dirs(src.parent, stop=stop)


def apply_moves(root: Path, moves: Sequence[tuple[str, Path, Path, str, str | None]], batch: str | None) -> list[Op]:
    """Carry out (op, src, destination folder, file name, ref) steps as one batch, under the lock, after recovery.

    The destination name gets a -2, -3… suffix when taken: a move never overwrites an image.
    """
    batch = batch or new_id()
    done: list[Op] = []
    with locked(root):
        recover_locked(root)
        for op, src, folder, name, ref in moves:
            if not src.is_file():
                raise LabelingError(f"{rel(root, src)} is not there any more (already moved or deleted?).")
            done.append(move_file(root, op, src, unique_path(folder, name), batch, ref))
            tidy_source(root, src)
    return done


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
    return len(_undo_stack(read(Path(dataset).resolve())))


def undo(dataset: str | Path, n: int = 1) -> list[Op]:
    """Reverse the last `n` actions (each a batch of moves), newest first. Returns the undo steps.

    A file that was since removed outside the app is skipped (recorded), so one lost file cannot block undo.
    """
    root = editable_root(dataset)
    done: list[Op] = []
    with locked(root):
        recover_locked(root)
        for batch in _undo_stack(read(root))[:n]:
            undo_batch = new_id()
            for op in reversed(batch):
                current = inside(root, op.dst, allow_meta=True)  # the journal is data: check it stays inside
                original = inside(root, op.src, allow_meta=True)
                if not current.is_file():
                    append(root, asdict(Op(new_id(), time.time(), "undo", op.dst, op.src, undo_batch, "skipped",
                                            op.id, "the file was not there any more")))
                    continue
                target = original if not original.exists() else unique_path(original.parent, original.name)
                done.append(move_file(root, "undo", current, target, undo_batch, op.id))
                if op.op == "delete":
                    remove_empty_dirs(current.parent, stop=trash_dir(root))
                else:
                    tidy_source(root, current)
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
            original = inside(root, item.original)
            if trash_dir(root) not in inside(root, item.path, allow_meta=True).parents:
                raise LabelingError(f"journal entry {item.op_id} does not point into the trash; not restoring it.")
            moves.append(("restore", item.path, original.parent, original.name, item.op_id))
    return apply_moves(root, moves, None)


def locate(dataset: str | Path, path: str | Path) -> Path | None:
    """Where an image is now, following the journal's committed moves (e.g. a prediction's file after a fix).

    Returns the current path (inside `.fewshot/trash/` if deleted), or None when it is nowhere to be found.
    """
    root = Path(dataset).resolve()
    try:
        current = rel(root, Path(path).resolve())
    except ValueError:
        return None
    for op in read(root):
        if op.done and op.src == current:
            current = op.dst
    found = root / current
    return found if found.exists() else None


def in_trash(dataset: str | Path, path: str | Path) -> bool:
    return trash_dir(Path(dataset).resolve()) in Path(path).resolve().parents
