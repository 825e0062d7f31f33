"""Labelling on real files: moves, journal, undo, trash, crash recovery, model-assisted bulk accept."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core import labeling
from core.labeling import LabelingError, journal


@pytest.fixture
def ds(workspace, make_dataset, make_image) -> Path:
    """A workspace dataset: red/green/blue × 4 images and 3 unlabelled images."""
    root = make_dataset(workspace / "datasets" / "colours", per_class=4)
    for i in range(3):
        make_image(root / "unlabelled" / f"new_{i}.png", (200, 200, 40), seed=50 + i)
    return root


def image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.png"))


def journal_lines(root: Path) -> list[dict]:
    return [json.loads(line) for line in labeling.journal_path(root).read_text().splitlines()]


def test_assign_moves_files_journals_and_undo_restores(ds):
    pool = sorted((ds / "unlabelled").iterdir())
    ops = labeling.move_to_class(ds, pool[:2], "yellow")
    assert [op.state for op in ops] == ["committed", "committed"]
    assert sorted(p.name for p in (ds / "yellow").iterdir()) == ["new_0.png", "new_1.png"]
    assert [p.name for p in labeling.unlabelled_images(ds)] == ["new_2.png"]
    view = labeling.label_view(ds)
    assert view.counts() == {"blue": 4, "green": 4, "red": 4, "yellow": 2}
    # The journal: a durable "pending" line before each rename, "committed" after.
    lines = journal_lines(ds)
    assert [line["state"] for line in lines] == ["pending", "committed", "pending", "committed"]
    assert lines[0]["src"] == "unlabelled/new_0.png" and lines[0]["dst"] == "yellow/new_0.png"
    assert labeling.can_undo(ds) == 1  # two files, one action

    undone = labeling.undo(ds)
    assert len(undone) == 2 and all(op.op == "undo" for op in undone)
    assert sorted(p.name for p in labeling.unlabelled_images(ds)) == ["new_0.png", "new_1.png", "new_2.png"]
    assert not (ds / "yellow").exists()  # an emptied class folder would stop training; it is removed
    assert labeling.can_undo(ds) == 0
    assert labeling.undo(ds) == []
    assert [op.op for op in labeling.history(ds)][:2] == ["undo", "undo"]


def test_relabel_never_overwrites_and_undo_goes_back(ds):
    before = {p.name: p.read_bytes() for p in (ds / "red").iterdir()}
    green0 = (ds / "green" / "img_0.png").read_bytes()
    [op] = labeling.move_to_class(ds, [ds / "green" / "img_0.png"], "red")
    assert op.dst == "red/img_0-2.png"
    assert (ds / "red" / "img_0.png").read_bytes() == before["img_0.png"]  # the old one is untouched
    assert (ds / "red" / "img_0-2.png").read_bytes() == green0
    # Moving into the class it is already in is no action at all.
    assert labeling.move_to_class(ds, [ds / "red" / "img_1.png"], "red") == []
    labeling.undo(ds)
    assert (ds / "green" / "img_0.png").read_bytes() == green0
    assert len(image_files(ds)) == 15


def test_delete_goes_to_trash_and_restores(ds):
    target = ds / "blue" / "img_3.png"
    content = target.read_bytes()
    [op] = labeling.delete_images(ds, [target])
    assert not target.exists()
    [item] = labeling.trash_items(ds)
    assert item.original == target and item.path.read_bytes() == content
    assert labeling.label_view(ds).counts()["blue"] == 3

    [restored] = labeling.restore_from_trash(ds)
    assert restored.op == "restore" and target.read_bytes() == content
    assert labeling.trash_items(ds) == []
    # Undo the restore → back in the trash; undo the delete → back in place. No file is ever duplicated.
    labeling.undo(ds)
    assert not target.exists() and len(labeling.trash_items(ds)) == 1
    labeling.undo(ds)
    assert target.read_bytes() == content and labeling.trash_items(ds) == []
    assert len(image_files(ds)) == 15


def test_unlabel_and_locate(ds):
    src = ds / "red" / "img_2.png"
    labeling.move_to_pool(ds, [src])
    assert (ds / "unlabelled" / "img_2.png").exists()
    labeling.move_to_class(ds, [ds / "unlabelled" / "img_2.png"], "blue")
    assert labeling.locate(ds, src) == ds / "blue" / "img_2-2.png"  # blue had an img_2.png already
    labeling.delete_images(ds, [ds / "blue" / "img_2-2.png"])
    where = labeling.locate(ds, src)
    assert where is not None and labeling.in_trash(ds, where)
    assert labeling.locate(ds, ds / "red" / "no_such.png") is None


def test_split_layout_keeps_each_photo_in_its_split(workspace, make_dataset, make_image):
    root = workspace / "datasets" / "split"
    make_dataset(root / "train", {"cats": (200, 100, 50), "dogs": (50, 100, 200)}, per_class=3)
    make_dataset(root / "validation", {"cats": (200, 100, 50), "dogs": (50, 100, 200)}, per_class=1)
    make_image(root / "unlabelled" / "new.png")
    labeling.move_to_class(root, [root / "validation" / "cats" / "img_0.png", root / "unlabelled" / "new.png"],
                           "dogs")
    assert (root / "validation" / "dogs" / "img_0-2.png").exists() and (root / "train" / "dogs" / "new.png").exists()
    # validation/cats is now empty and goes; validation/ itself stays (it still holds dogs).
    assert not (root / "validation" / "cats").exists() and (root / "validation").is_dir()
    view = labeling.label_view(root)
    assert view.layout == "split" and view.counts() == {"cats": 3, "dogs": 6}
    assert labeling.label_of(root, root / "validation" / "dogs" / "img_0-2.png") == "dogs"
    assert labeling.label_of(root, root / "unlabelled" / "x.png") is None
    labeling.undo(root)
    assert (root / "validation" / "cats" / "img_0.png").exists() and (root / "unlabelled" / "new.png").exists()


def test_refuses_unsafe_changes(ds, tmp_path, demo_dataset, make_dataset, make_image):
    outside = make_image(tmp_path / "elsewhere.png")
    with pytest.raises(LabelingError, match="outside"):
        labeling.move_to_class(ds, [outside], "red")
    with pytest.raises(LabelingError, match="outside"):
        labeling.delete_images(ds, ["../../elsewhere.png"])
    with pytest.raises(LabelingError, match="not a usable class name"):
        labeling.move_to_class(ds, [ds / "red" / "img_0.png"], "../evil")
    with pytest.raises(LabelingError, match="not a usable class name"):
        labeling.move_to_class(ds, [ds / "red" / "img_0.png"], "unlabelled")
    (ds / "red" / "link.png").symlink_to(outside)
    with pytest.raises(LabelingError, match="symbolic link"):
        labeling.delete_images(ds, [ds / "red" / "link.png"])
    with pytest.raises(LabelingError, match="read-only"):
        labeling.delete_images(demo_dataset, [next((demo_dataset / "fish").iterdir())])
    other = make_dataset(tmp_path / "not_in_workspace", per_class=2)
    with pytest.raises(LabelingError, match="not a dataset in the workspace"):
        labeling.move_to_class(other, [other / "red" / "img_0.png"], "blue")
    assert outside.exists() and (other / "red" / "img_0.png").exists()
    assert len(image_files(ds)) == 16 and (ds / "red" / "link.png").is_symlink()  # 15 images + the link


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the app catches it."""


def test_crash_before_the_rename_rolls_back(ds, monkeypatch):
    src = ds / "unlabelled" / "new_0.png"

    def dies(*_args):
        raise Crash

    monkeypatch.setattr(journal.os, "rename", dies)
    with pytest.raises(Crash):
        labeling.move_to_class(ds, [src], "red")
    monkeypatch.undo()
    assert journal_lines(ds)[-1]["state"] == "pending"
    notes = labeling.recover(ds)
    assert len(notes) == 1 and "stayed where it was" in notes[0]
    assert src.exists() and not (ds / "red" / "new_0.png").exists()
    assert labeling.history(ds)[0].state == "rolled_back"
    assert labeling.can_undo(ds) == 0 and labeling.recover(ds) == []  # settled once, for good


def test_real_crash_after_the_rename_completes(ds, project_root):
    """A separate process renames the file and dies (os._exit) before writing 'committed'."""
    script = (
        "import os\n"
        "from core import labeling\n"
        "from core.labeling import journal\n"
        "real = os.rename\n"
        "def rename_then_die(a, b):\n"
        "    real(a, b)\n"
        "    os._exit(9)\n"
        "journal.os.rename = rename_then_die\n"
        f"labeling.move_to_class({str(ds)!r}, [{str(ds / 'unlabelled' / 'new_1.png')!r}], 'red')\n"
    )
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", script], cwd=project_root, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 9, proc.stderr
    assert journal_lines(ds)[-1]["state"] == "pending"
    # Any next change recovers first; here the page's explicit call.
    assert "completed" in labeling.recover(ds)[0]
    copies = [p for p in ds.rglob("new_1.png")]
    assert copies == [ds / "red" / "new_1.png"]
    labeling.undo(ds)  # a recovered step is undoable like any other
    assert [p for p in ds.rglob("new_1.png")] == [ds / "unlabelled" / "new_1.png"]


def test_recovery_of_hand_written_pending_steps(ds):
    """Both files present (another file took the name) and neither present: nothing is moved or invented."""
    (ds / "red" / "new_2.png").write_bytes((ds / "red" / "img_0.png").read_bytes())
    labeling.meta_dir(ds).mkdir()
    with open(labeling.journal_path(ds), "w") as fh:
        for i, (src, dst) in enumerate([("unlabelled/new_2.png", "red/new_2.png"), ("gone.png", "red/gone.png")]):
            fh.write(json.dumps({"id": f"x{i}", "time": 0, "op": "move", "src": src, "dst": dst, "batch": "b",
                                 "state": "pending"}) + "\n")
        fh.write('{"id": "torn", "op": "mo')  # a crash mid-append: ignored, and closed off by the next append
    before = image_files(ds)
    states = {op.id: op.state for op in labeling.history(ds)}
    assert states == {"x0": "pending", "x1": "pending"}
    assert len(labeling.recover(ds)) == 2
    assert {op.id: op.state for op in labeling.history(ds)} == {"x0": "rolled_back", "x1": "missing"}
    assert image_files(ds) == before
    labeling.move_to_class(ds, [ds / "unlabelled" / "new_2.png"], "green")
    assert labeling.history(ds)[0].state == "committed"


def test_uploads_and_editable_copy(workspace, demo_dataset, make_image):
    copy = labeling.make_editable_copy(demo_dataset, "demo")
    assert copy.parent == (workspace / "datasets").resolve() and labeling.is_editable(copy)
    assert not labeling.is_editable(demo_dataset)
    assert labeling.label_view(copy).counts() == labeling.label_view(demo_dataset).counts()
    photo = make_image(workspace / "photo.jpg", fmt="JPEG")
    data = photo.read_bytes()
    report = labeling.add_unlabelled_uploads(copy, [("photo.jpg", data), ("photo.jpg", data),
                                                    ("notes.png", b"not an image")])
    assert [p.name for p in report.saved] == ["photo.jpg", "photo-2.jpg"]
    assert [name for name, _ in report.skipped] == ["notes.png"]
    assert len(labeling.unlabelled_images(copy)) == 2
    assert labeling.make_editable_copy(demo_dataset, "demo").name == "demo-2"


def test_predict_pool_and_accept_above_threshold(workspace, demo_run, demo_dataset, make_image):
    from core.runs import Run

    run = Run(demo_run)
    copy = labeling.make_editable_copy(demo_dataset, "demo")
    pool = copy / "unlabelled"
    pool.mkdir()
    originals = {}
    for cls in ("fish", "tools", "monuments"):
        for src in sorted((copy / cls).iterdir())[:2]:
            shutil.copy(src, pool / f"{cls}_{src.name}")
            originals[f"{cls}_{src.name}"] = cls
    make_image(pool / "noise.png", (128, 128, 128), (64, 64), noise=80)
    frame = labeling.predict_pool(run, labeling.unlabelled_images(copy))
    assert len(frame) == 7 and list(frame["confidence"]) == sorted(frame["confidence"])  # least confident first
    assert set(frame["predicted"]) <= set(run.labels())
    sure = frame[frame["confidence"] >= 0.5]
    assert len(sure) >= 3

    ops = labeling.accept_predictions(copy, frame, 0.5)
    assert len(ops) == len(sure) and len({op.batch for op in ops}) == 1
    for path, predicted in zip(sure["path"], sure["predicted"]):
        assert (copy / predicted / Path(path).name).exists() and not Path(path).exists()
    left = {p.name for p in labeling.unlabelled_images(copy)}
    assert left == {Path(p).name for p in frame[frame["confidence"] < 0.5]["path"]}
    # The model recognises training images it was fitted on: most land in their own class.
    right = sum(originals.get(Path(p).name) == c for p, c in zip(sure["path"], sure["predicted"]))
    assert right >= len(sure) - 1
    labeling.undo(copy)  # one action → one undo puts all of them back
    assert len(labeling.unlabelled_images(copy)) == 7
    assert labeling.accept_predictions(copy, frame.assign(confidence=0.1), 0.5) == []
    with pytest.raises(LabelingError):
        labeling.accept_predictions(copy, frame, 0.0)


def test_one_rule_for_changing_a_dataset(workspace, tmp_path, make_dataset, demo_dataset):
    """Labelling, the Dataset page's class builder and the pages' read-only checks all ask core.workspace."""
    from core.datasets.importing import create_class
    from core.workspace import PathError, ensure_writable, is_demo

    DEMO = demo_dataset

    mine = make_dataset(workspace / "datasets" / "mine", per_class=1)
    assert ensure_writable(mine) == mine.resolve() and labeling.is_editable(mine) and not is_demo(mine)
    assert is_demo(DEMO) and is_demo(DEMO / "fish")
    refused = {DEMO: "read-only", DEMO / "fish": "read-only", mine / "red": "not a dataset in the workspace",
               make_dataset(tmp_path / "elsewhere", per_class=1): "not a dataset in the workspace",
               workspace / "datasets" / "gone": "does not exist"}
    for path, why in refused.items():
        assert not labeling.is_editable(path)
        with pytest.raises(PathError, match=why):
            ensure_writable(path)
        with pytest.raises(LabelingError, match=why):  # the same message, as labelling's error
            labeling.editable_root(path)
    with pytest.raises(PathError, match="read-only"):
        create_class(DEMO, "new")
    assert not (DEMO / "new").exists()


def test_label_view_lists_the_classes_training_sees(workspace, make_dataset, make_image):
    """The Label page lists classes with core.datasets.class_folders and its images as core.datasets.Item."""
    from core.datasets import Item, scan_dataset

    root = make_dataset(workspace / "datasets" / "colours", per_class=3)
    (root / ".hidden").mkdir()
    (root / "_trash").mkdir()
    make_image(root / "unlabelled" / "new.png")
    view = labeling.label_view(root)
    scanned = scan_dataset(root)
    assert view.classes == scanned.classes == ["blue", "green", "red"]
    assert all(isinstance(item, Item) and item.split == "train" for item in view.labelled)
    assert sorted(item.path for item in view.labelled) == sorted(item.path for item in scanned.items)
    assert [p.name for p in view.unlabelled] == ["new.png"]


def test_pool_order_follows_the_model_then_names():
    import pandas as pd

    pool = [Path("/d/unlabelled/b.png"), Path("/d/unlabelled/A.png"), Path("/d/unlabelled/c.png")]
    frame = pd.DataFrame({"path": [str(pool[0]), str(pool[2])], "predicted": ["red", "blue"],
                          "confidence": [0.9, 0.6]})
    suggestions = labeling.suggestions_by_path(frame)
    assert suggestions == {pool[0]: ("red", 0.9), pool[2]: ("blue", 0.6)}
    assert labeling.suggestions_by_path(None) == {}
    assert [p.name for p in labeling.order_pool(pool, suggestions, "unsure")] == ["c.png", "b.png", "A.png"]
    assert [p.name for p in labeling.order_pool(pool, suggestions, "sure")] == ["b.png", "c.png", "A.png"]
    assert [p.name for p in labeling.order_pool(pool, suggestions, "name")] == ["A.png", "b.png", "c.png"]
    assert [p.name for p in labeling.order_pool(pool, {}, "unsure")] == ["A.png", "b.png", "c.png"]


def test_one_bounded_model_cache(tmp_path, monkeypatch):
    """Label suggestions and Predictions uploads share core.model_cache: one load per file version, few kept."""
    import core.export
    from core import model_cache
    from core.export import ExportError

    loads = []
    monkeypatch.setattr(core.export, "load_model", lambda path: loads.append(str(path)) or object())
    model_cache.clear()
    files = [tmp_path / f"m{i}.keras" for i in range(3)]
    for f in files:
        f.write_bytes(b"model")
    first = model_cache.load_cached_model(files[0])
    assert model_cache.load_cached_model(files[0]) is first and len(loads) == 1
    os.utime(files[0], ns=(1, 1))  # rewritten (a retrained run): a new version, loaded again
    assert model_cache.load_cached_model(files[0]) is not first and len(loads) == 2
    for f in files[1:]:
        model_cache.load_cached_model(f)
    assert model_cache._load.cache_info().currsize == model_cache.MAX_MODELS
    model_cache.clear()
    monkeypatch.undo()
    with pytest.raises(ExportError, match="does not exist"):
        model_cache.load_cached_model(tmp_path / "missing.keras")
