"""The Dataset page, driven through its widgets with Streamlit's AppTest (a real script run, no browser)."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

PAGE = "pages/1_dataset.py"
DEMO_CLASSES = {"fish", "monuments", "renewable_energy", "tools"}


def counts_table(at: AppTest):
    """The classes × splits table (the first dataframe whose index is named 'class')."""
    tables = [d.value for d in at.dataframe if d.value.index.name == "class"]
    assert tables, "no counts table on the page"
    return tables[0]


@pytest.fixture
def png_bytes(make_image):
    def png_bytes(tmp_path: Path, name: str, color=(200, 30, 30), seed: int = 0) -> bytes:
        return make_image(tmp_path / "src" / name, color, seed=seed).read_bytes()

    return png_bytes


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def test_demo_is_the_default_on_an_empty_workspace(workspace, demo_dataset, open_page):
    at = open_page()
    assert Path(at.session_state["dataset"]) == demo_dataset
    assert at.selectbox(key="ds_pick").value == str(demo_dataset)
    table = counts_table(at)
    assert set(table.index) == DEMO_CLASSES
    assert (table["total"] == table["train"] + table["val"]).all()
    assert not errors(at)
    # Thumbnails: 8 per class, captioned with file name and split.
    captions = [c for img in at.image for c in img.captions]
    assert len(captions) == 8 * len(DEMO_CLASSES)
    assert any(c.startswith("fish") and c.endswith("· train") for c in captions)
    # The demo is read-only: no class builder for it.
    assert not [t for t in at.text_input if t.key == "ds_new_class"]


def test_switching_to_a_workspace_dataset(workspace, make_dataset, open_page):
    colours = make_dataset(workspace / "datasets" / "colours", per_class=5)
    at = open_page()
    pick = at.selectbox(key="ds_pick")
    assert str(colours) in pick.options or "colours" in pick.options
    pick.set_value(str(colours)).run()
    assert not at.exception
    assert at.session_state["dataset"] == str(colours)
    assert set(counts_table(at).index) == {"red", "green", "blue"}
    assert any("Few images" in w.value for w in at.warning)  # 5 per class is below the 10 advised

    # Set from another page (session state only): the page follows it.
    at2 = open_page(colours)
    assert set(counts_table(at2).index) == {"red", "green", "blue"}


def test_a_one_class_dataset_shows_an_error_not_an_exception(workspace, make_dataset, open_page):
    single = make_dataset(workspace / "datasets" / "single", classes={"only": (10, 200, 10)}, per_class=3)
    at = open_page(single)
    assert any("at least 2 class folders" in e for e in errors(at)), errors(at)
    assert not [d for d in at.dataframe if d.value.index.name == "class"]
    # The user can still fix it here: the builder is open and offers to add a class.
    at.text_input(key="ds_new_class").input("other")
    at.button(key="ds_add_class").click().run()
    assert not at.exception
    assert (single / "other").is_dir()


def test_unusable_folders_are_explained(workspace, tmp_path, make_dataset, open_page):
    outside = make_dataset(tmp_path / "elsewhere", per_class=3)
    at = open_page(outside)
    assert any("outside the folders" in e for e in errors(at)), errors(at)
    gone = workspace / "datasets" / "deleted-since"
    at = open_page(gone)
    assert any("no longer exists" in e for e in errors(at)), errors(at)
    assert not gone.exists()


def test_build_a_dataset_in_the_browser(workspace, tmp_path, open_page, png_bytes):
    at = open_page()
    at.text_input(key="ds_new_name").input("pets")
    at.button(key="ds_create").click().run()
    root = workspace / "datasets" / "pets"
    assert root.is_dir() and Path(at.session_state["dataset"]) == root
    assert any("no photos yet" in i.value for i in at.info)  # guidance, not an error wall
    assert not errors(at)

    # A bad class name is explained; a good one creates the folder.
    at.text_input(key="ds_new_class").input("validation")
    at.button(key="ds_add_class").click().run()
    assert any("not a usable class name" in e for e in errors(at))
    assert not (root / "validation").exists()
    for name in ("cats", "dogs"):
        at.text_input(key="ds_new_class").input(name)
        at.button(key="ds_add_class").click().run()
        assert not at.exception
        assert (root / name).is_dir()
    assert at.selectbox(key="ds_upload_class").value == "dogs"  # the new class is selected for uploads

    # Drop photos (one is not an image): saved at once, the bad one reported, the uploader reset.
    uploader = at.file_uploader(key="ds_photos_0")
    uploader.set_value([(f"dog{i}.png", png_bytes(tmp_path, f"d{i}.png", (40, 40, 200), i), "image/png")
                        for i in range(3)] + [("notes.png", b"not a picture", "image/png")]).run()
    assert not at.exception
    assert sorted(p.name for p in (root / "dogs").iterdir()) == ["dog0.png", "dog1.png", "dog2.png"]
    assert any("Saved 3 photo(s)" in s.value for s in at.success)
    skipped = [d.value for d in at.dataframe if "reason" in d.value.columns]
    assert skipped and skipped[0]["file"].tolist() == ["notes.png"]
    assert [f.key for f in at.file_uploader if f.key.startswith("ds_photos_")] == ["ds_photos_1"]
    at.run()  # a later rerun must not save the same files again
    assert len(list((root / "dogs").iterdir())) == 3

    # An empty class is reported (with what to do); once both classes have photos the dataset is ready.
    assert any("'cats' has no usable image" in e for e in errors(at)), errors(at)
    at.selectbox(key="ds_upload_class").set_value("cats").run()
    at.file_uploader(key="ds_photos_1").set_value(
        [(f"cat{i}.png", png_bytes(tmp_path, f"c{i}.png", (200, 40, 40), i), "image/png") for i in range(3)]).run()
    assert not at.exception and not errors(at)
    table = counts_table(at)
    assert set(table.index) == {"cats", "dogs"} and table["total"].tolist() == [3, 3]


def test_import_a_zip(workspace, tmp_path, open_page, png_bytes):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label, color in (("apples", (200, 30, 30)), ("limes", (30, 200, 30))):
            for i in range(4):
                archive.writestr(f"fruit/{label}/{i}.png", png_bytes(tmp_path, f"{label}{i}.png", color, i))
        archive.writestr("../escape.txt", "zip-slip attempt")
    at = open_page()
    at.file_uploader(key="ds_zip_0").set_value(("fruit.zip", buffer.getvalue(), "application/zip")).run()
    at.button(key="ds_import").click().run()
    assert not at.exception
    root = workspace / "datasets" / "fruit"
    assert Path(at.session_state["dataset"]) == root
    assert set(counts_table(at).index) == {"apples", "limes"}
    notes = [d.value for d in at.dataframe if "entry" in d.value.columns]
    assert notes and "unsafe path" in notes[0]["entry"][0]
    assert not (workspace / "datasets" / "escape.txt").exists()

    # The same name again is refused with a readable message.
    at.file_uploader(key="ds_zip_1").set_value(("fruit.zip", buffer.getvalue(), "application/zip")).run()
    at.button(key="ds_import").click().run()
    assert any("already exists" in e for e in errors(at)), errors(at)


def test_split_controls_change_the_split(workspace, make_dataset, open_page):
    colours = make_dataset(workspace / "datasets" / "colours", per_class=10)
    at = open_page(colours)
    # Each photo's split is a hash of its content: the shares drift from those asked, and the page says so.
    assert counts_table(at)["val"].tolist() == [2, 1, 2]
    assert any("5 of 30 photos (17%) are in validation, for 20% asked" in c.value for c in at.caption)
    at.slider(key="ds_val_split").set_value(0.5).run()
    at.slider(key="ds_test_split").set_value(0.2).run()
    assert at.session_state["val_split"] == 0.5 and at.session_state["test_split"] == 0.2
    table = counts_table(at)
    assert table["val"].tolist() == [3, 5, 5] and table["test"].tolist() == [2, 1, 2]


def test_split_layout_says_the_folders_decide(workspace, make_dataset, open_page):
    root = workspace / "datasets" / "presplit"
    make_dataset(root / "train", per_class=4)
    make_dataset(root / "validation", per_class=2)
    at = open_page(root)
    assert not errors(at)
    assert any("the folders decide" in m.value for m in at.markdown)
    assert not [s for s in at.slider if s.key == "ds_val_split"]
    assert counts_table(at)["val"].tolist() == [2, 2, 2]


@pytest.fixture
def open_page(open_app_page):
    def open_page(dataset: Path | None = None):
        return open_app_page(PAGE, timeout=120, **({"dataset": str(dataset)} if dataset is not None else {}))

    return open_page


def test_the_class_builder_counts_what_the_scan_will_see(tmp_path, make_dataset, make_image):
    import os

    from core.datasets import class_folders
    from ui.dataset_views import class_image_counts

    root = make_dataset(tmp_path / "ds", per_class=2)
    (root / "empty").mkdir()  # a class just created: listed with 0
    make_image(root / "red" / ".fewshot" / "cache.png")  # inside a hidden folder: not part of the dataset
    (root / "red" / "link.png").symlink_to(root / "green" / "img_0.png")  # never followed
    make_image(root / "unlabelled" / "pool.png")  # the labelling pool, not a class
    make_image(root / ".hidden" / "x.png")
    os.mkdir(os.fsencode(root) + b"/\xff-not-text")
    assert class_image_counts(root) == {"blue": 2, "empty": 0, "green": 2, "red": 2}
    assert list(class_image_counts(root)) == [p.name for p in class_folders(root)]
    assert class_image_counts(tmp_path / "gone") == {}


def test_camera_shots_land_in_the_chosen_class_once_each(workspace, tmp_path, open_page, make_image):
    """Several shots in a row: each is saved into the class at once and the camera is ready again; a rerun, or the
    same shot reported twice, saves nothing more."""
    root = workspace / "datasets" / "pets"
    for name in ("cats", "dogs"):
        (root / name).mkdir(parents=True)
    at = open_page(root)
    at.selectbox(key="ds_upload_class").set_value("cats").run()
    at.toggle(key="ds_camera_on").set_value(True).run()
    shots = [make_image(tmp_path / f"shot{i}.jpg", (30 * i, 120, 200), fmt="JPEG", seed=i).read_bytes()
             for i in range(2)]
    at.camera_input(key="ds_camera_0").set_value(("image.jpg", shots[0], "image/jpeg")).run()
    assert not at.exception, at.exception
    assert any("Saved shot 1 into" in s.value for s in at.success)
    assert [c.key for c in at.camera_input] == ["ds_camera_1"]  # a fresh camera for the next shot
    at.camera_input(key="ds_camera_1").set_value(("image.jpg", shots[1], "image/jpeg")).run()
    saved = sorted((root / "cats").iterdir())
    assert len(saved) == 2 and all(p.name.startswith("camera-") and p.suffix == ".jpg" for p in saved)
    assert sorted(p.read_bytes() for p in saved) == sorted(shots)
    assert not any((root / "dogs").iterdir())
    at.camera_input(key="ds_camera_2").set_value(("image.jpg", shots[1], "image/jpeg")).run()  # the same shot
    at.run()
    assert len(list((root / "cats").iterdir())) == 2
