"""The Label page, driven through its widgets with Streamlit's AppTest (a real script run, no browser)."""
from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_duplicates import scene

from core import labeling
from core.runs import get_run, process_alive
from ui.labeling_views import NEW_CLASS, path_key

PAGE = "pages/2_label.py"


def ok(at: AppTest) -> AppTest:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


@pytest.fixture
def with_pool(make_dataset, make_image):
    def with_pool(workspace: Path, n: int = 3) -> Path:
        root = make_dataset(workspace / "datasets" / "colours", per_class=3).resolve()
        for i in range(n):
            make_image(root / "unlabelled" / f"new_{i}.png", (200, 200, 40), seed=70 + i)
        return root

    return with_pool


def counts_line(at: AppTest) -> str:
    return next(m.value for m in at.markdown if "unlabelled**" in m.value)


def test_empty_workspace_offers_an_editable_copy_of_the_demo(workspace, demo_dataset, open_page):
    at = open_page()
    assert "read-only" in at.info[0].value
    at.button(key="lbl_make_copy").click().run()
    ok(at)
    copy = Path(at.session_state["dataset"])
    assert copy.parent == (workspace / "datasets").resolve() and labeling.origin_of(copy) == demo_dataset.resolve()
    assert "**0 unlabelled**" in counts_line(at) and "fish: **28**" in counts_line(at)
    assert at.button(key="lbl_undo").disabled
    # Every view renders on the copy (the data check scans it for duplicates and small pictures).
    for mode in ("focus", "labelled", "check", "history"):
        at.radio(key="lbl_view").set_value(mode).run()
        ok(at)
        if mode == "check":
            assert {m.label for m in at.metric} == {"Across classes", "Across train/validation",
                                                   "Unlabelled copies", "Within a class"}
            assert any(m.value.startswith("**Small pictures**") for m in at.markdown)
    assert len(list((workspace / "datasets").iterdir())) == 1


def test_assign_ticked_photos_then_undo(workspace, open_page, with_pool):
    root = with_pool(workspace)
    at = open_page(root)
    assert "**3 unlabelled**" in counts_line(at)
    pool = sorted((root / "unlabelled").iterdir())
    for path in pool[:2]:
        at.checkbox(key=path_key("lbl_sel", path)).check()
    at.run()
    assert at.button(key="lbl_assign").label == "Assign 2"
    at.selectbox(key="lbl_target").set_value("green").run()
    at.button(key="lbl_assign").click().run()
    ok(at)
    assert sorted(p.name for p in (root / "unlabelled").iterdir()) == ["new_2.png"]
    assert (root / "green" / "new_0.png").exists() and (root / "green" / "new_1.png").exists()
    assert "**1 unlabelled**" in counts_line(at) and "green: **5**" in counts_line(at)
    assert any("Moved 2 photos to **green**" in s.value for s in at.success)

    at.button(key="lbl_undo").click().run()
    ok(at)
    assert sorted(p.name for p in (root / "unlabelled").iterdir()) == ["new_0.png", "new_1.png", "new_2.png"]
    assert "**3 unlabelled**" in counts_line(at) and at.button(key="lbl_undo").disabled

    # A new class, named in the page.
    at.checkbox(key=path_key("lbl_sel", pool[2])).check()
    at.selectbox(key="lbl_target").set_value(NEW_CLASS).run()
    at.text_input(key="lbl_target_new").input("yellow").run()
    at.button(key="lbl_assign").click().run()
    ok(at)
    assert [p.name for p in (root / "yellow").iterdir()] == ["new_2.png"]
    assert "yellow: **1**" in counts_line(at)


def test_one_at_a_time_keys_skip_and_delete(workspace, open_page, with_pool):
    root = with_pool(workspace)
    at = open_page(root)
    at.radio(key="lbl_view").set_value("focus").run()
    ok(at)
    assert [b.label for b in at.button if b.key.startswith("lbl_focus_cls_")] == ["1 · blue", "2 · green", "3 · red"]
    at.button(key="lbl_focus_cls_2").click().run()  # key "3": red
    ok(at)
    assert (root / "red" / "new_0.png").exists()
    assert any("Photo 1 of 2" in m.value for m in at.markdown)
    at.button(key="lbl_skip").click().run()  # new_1 skipped: new_2 is shown
    assert any("Photo 1 of 1" in m.value and "new\\_2" in m.value for m in at.markdown)
    at.button(key="lbl_focus_delete").click().run()
    ok(at)
    assert not (root / "unlabelled" / "new_2.png").exists()
    assert len(labeling.trash_items(root)) == 1
    assert any("You skipped 1" in i.value for i in at.info)

    # The trash view restores it.
    at.radio(key="lbl_view").set_value("history").run()
    [item] = labeling.trash_items(root)
    at.button(key=f"lbl_restore_{item.op_id}").click().run()
    ok(at)
    assert (root / "unlabelled" / "new_2.png").exists() and labeling.trash_items(root) == []


def test_data_check_finds_a_copy_under_another_class_and_fixes_it(workspace, open_page):
    root = (workspace / "datasets" / "scenes").resolve()
    for c, cls in enumerate(("red", "blue")):
        for i in range(4):
            scene(root / cls / f"img_{i}.png", seed=10 * c + i)
    shutil.copy(root / "red" / "img_1.png", root / "blue" / "stray.png")
    (root / "unlabelled").mkdir()
    shutil.copy(root / "blue" / "img_2.png", root / "unlabelled" / "again.png")
    at = open_page(root)
    at.radio(key="lbl_view").set_value("check").run()
    ok(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Across classes"] == "1" and metrics["Unlabelled copies"] == "1"
    move = [b for b in at.button if b.label == "Move to red"]
    assert len(move) == 1
    move[0].click().run()
    ok(at)
    assert not (root / "blue" / "stray.png").exists() and (root / "red" / "stray.png").exists()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Across classes"] == "0" and metrics["Within a class"] == "1"  # now two copies in red
    # The unlabelled copy: deleted from the pool (its tile is the second of its pair).
    pair_key = path_key("lbl_dup", f"{root / 'blue' / 'img_2.png'}|{root / 'unlabelled' / 'again.png'}")
    at.button(key=f"{pair_key}_b_del").click().run()
    ok(at)
    assert not (root / "unlabelled" / "again.png").exists() and labeling.trash_items(root)
    assert {m.label: m.value for m in at.metric}["Unlabelled copies"] == "0"


def test_suggestions_sort_and_accept_all(workspace, demo_run, demo_dataset, open_page):
    shutil.copytree(demo_run, workspace / "runs" / demo_run.name)
    copy = labeling.make_editable_copy(demo_dataset, "demo")
    (copy / "unlabelled").mkdir()
    for cls in ("fish", "tools"):
        for src in sorted((copy / cls).iterdir())[:2]:
            shutil.copy(src, copy / "unlabelled" / f"{cls}_{src.name}")
    at = open_page(copy)
    # The run trained on the demo is picked for the copy of the demo.
    assert at.selectbox(key="lbl_run").value == demo_run.name
    captions = [c.label for c in at.checkbox if c.key.startswith("lbl_sel_")]
    assert len(captions) == 4 and all("→" in c for c in captions)
    confidences = [int(c.rsplit(" ", 1)[1].rstrip("%")) for c in captions]
    assert confidences == sorted(confidences)  # least sure first
    at.slider(key="lbl_threshold").set_value(50).run()
    expected = sum(c >= 50 for c in confidences)
    assert at.button(key="lbl_accept").label.startswith(f"Accept {expected} suggestion")
    at.button(key="lbl_accept").click().run()
    ok(at)
    assert len(labeling.unlabelled_images(copy)) == 4 - expected
    assert labeling.can_undo(copy) == 1

    # Retrain: the run was trained on the read-only demo; the retraining uses the fixed copy.
    at.button(key="lbl_retrain").click().run()
    ok(at)
    new = get_run(at.session_state["lbl_retrain_started"])
    try:
        assert new.config().data == str(copy) and new.config().mode == "bottleneck"
        assert new.config_dict()["name"] == f"retrain of {demo_run.name}"
        assert any("Watch its curves" in link.label for link in at.get("page_link"))  # while it trains
        assert any(f"Retraining `{new.id}`" in bar.proto.text for bar in at.get("progress"))
    finally:  # not needed to finish here (tests/test_labeling and the timing in the report cover training)
        new.request_stop()
        pid = new.status().pid
        if pid and process_alive(pid):
            os.kill(pid, signal.SIGTERM)  # the run process this test started (a child of this process): reap it
            for _ in range(100):
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        break
                except ChildProcessError:
                    break
                time.sleep(0.1)


def fix_script(dataset: str, image: str, classes: list[str]) -> None:
    """What the Predictions page does for a wrong prediction: the fix widgets under its photo."""
    from pathlib import Path

    from ui.labeling_views import fix_controls

    fix_controls(Path(dataset), Path(image), classes, key="fix0")


def test_fix_controls_copy_the_demo_then_move_and_delete_in_the_copy(workspace, demo_dataset):
    image = sorted((demo_dataset / "fish").iterdir())[0]
    classes = ["fish", "monuments", "renewable_energy", "tools"]
    at = AppTest.from_function(fix_script, default_timeout=60, args=(str(demo_dataset), str(image), classes))
    at.run()
    ok(at)
    # The demo is read-only: the only widget offers a copy.
    assert [b.key for b in at.button] == ["fix0_copy"]
    at.button(key="fix0_copy").click().run()
    ok(at)
    [copy] = list((workspace / "datasets").iterdir())
    assert Path(at.session_state["dataset"]) == copy and labeling.working_copy(demo_dataset) == copy.resolve()
    assert at.selectbox(key="fix0_class").value == "fish" and at.button(key="fix0_move").disabled
    at.selectbox(key="fix0_class").set_value("tools").run()
    at.button(key="fix0_move").click().run()
    ok(at)
    assert (copy / "tools" / image.name).exists() and not (copy / "fish" / image.name).exists()
    assert image.exists()  # the demo itself is untouched
    assert any("Now filed under **tools**" in c.value for c in at.caption)  # found again through the journal
    at.button(key="fix0_delete").click().run()
    ok(at)
    assert labeling.in_trash(copy, labeling.counterpart(demo_dataset, image, copy))
    assert any("Deleted" in c.value for c in at.caption)
    labeling.undo(copy)
    at.run()
    assert at.button(key="fix0_move").disabled  # back in tools, where the selector points


@pytest.fixture
def open_page(open_app_page):
    def open_page(dataset: Path | None = None):
        return open_app_page(PAGE, timeout=120, **({"dataset": str(dataset)} if dataset is not None else {}))

    return open_page
