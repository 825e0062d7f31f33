"""The Augmentation page, driven through its widgets with Streamlit's AppTest (real Keras layers, no browser)."""
from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from core.augment import AugmentConfig, default_augment

PAGE = "pages/3_augmentation.py"
N = 8  # the page's default number of samples


@pytest.fixture
def open_page(open_app_page):
    def open_page(**state) -> AppTest:
        return open_app_page(PAGE, timeout=120, **state)

    return open_page


def previews(at: AppTest) -> list[tuple[str, list[str]]]:
    """Per previewed photo: (url of the 'before' image, urls of its augmented samples), in page order.

    AppTest gives each st.image its media URL, which is derived from the image bytes: equal URLs, equal pixels.
    """
    urls = [img.value[0] for img in at.image]
    captions = [img.captions[0] for img in at.image]
    starts = [i for i, c in enumerate(captions) if c.startswith("Before")]
    ends = starts[1:] + [len(urls)]
    return [(urls[s], urls[s + 1:e]) for s, e in zip(starts, ends)]


def test_renders_the_default_preview(workspace, open_page):
    at = open_page()
    assert at.session_state["augment"] == default_augment().to_dict()
    # Default pick: the first photo of each of the first two demo classes.
    assert [p.split("/")[0] for p in at.multiselect(key="aug_pick").value] == ["fish", "monuments"]
    shown = previews(at)
    assert len(shown) == 2
    for before, after in shown:
        assert len(after) == N
        assert len(set(after)) == N and before not in after  # all different, none the unchanged photo
    assert any("224×224" in c.value for c in at.caption)  # the default backbone's input size


def test_changing_settings_updates_the_session_and_the_preview(workspace, open_page):
    at = open_page()
    before = previews(at)
    at.slider(key="aug_rotation_range").set_value(0.0)
    at.checkbox(key="aug_horizontal_flip").uncheck()
    at.run()
    assert not at.exception
    augment = at.session_state["augment"]
    assert augment["rotation_range"] == 0.0 and augment["horizontal_flip"] is False
    assert augment == {**default_augment().to_dict(), "rotation_range": 0.0, "horizontal_flip": False}
    after = previews(at)
    assert [b for b, _ in after] == [b for b, _ in before]  # the originals are unchanged…
    assert all(set(a).isdisjoint(b) for (_, a), (_, b) in zip(after, before))  # …the samples are new

    # Widgets are rebuilt from the session key, so the choice survives leaving the page and coming back.
    at.multiselect(key="aug_pick").unselect(at.multiselect(key="aug_pick").value[0]).run()
    picked = at.multiselect(key="aug_pick").value
    at.switch_page("pages/1_dataset.py").run()
    at.switch_page(PAGE).run()
    assert at.multiselect(key="aug_pick").value == picked and len(picked) == 1
    assert at.slider(key="aug_rotation_range").value == 0.0
    assert at.checkbox(key="aug_horizontal_flip").value is False

    at.button(key="aug_reset").click().run()
    assert at.session_state["augment"] == default_augment().to_dict()  # the "natural" preset, not the recipe's
    assert at.slider(key="aug_rotation_range").value == 10.0 and at.checkbox(key="aug_horizontal_flip").value


def test_switching_augmentation_off_shows_the_originals(workspace, open_page):
    at = open_page()
    at.toggle(key="aug_enabled").set_value(False).run()
    assert at.session_state["augment"]["enabled"] is False
    assert any("Augmentation is off" in i.value for i in at.info)
    assert at.slider(key="aug_rotation_range").disabled
    for before, after in previews(at):
        assert set(after) == {before}  # every sample is the photo exactly as the model sees it


def test_new_samples_changes_the_seed_and_the_pictures(workspace, open_page):
    at = open_page()
    first = previews(at)
    at.button(key="aug_new_samples").click().run()
    assert at.session_state["aug_preview_seed"] == 1
    assert at.number_input(key="aug_seed").value == 1
    second = previews(at)
    assert [b for b, _ in second] == [b for b, _ in first]
    assert all(a != b for (_, a), (_, b) in zip(second, first))
    # Deterministic for a seed: back to seed 0 gives the first pictures again.
    at.number_input(key="aug_seed").set_value(0).run()
    assert previews(at) == first


def test_samples_count_and_model_size_follow_the_settings(workspace, open_page):
    at = open_page(backbone="vgg16")
    assert any("150×150" in c.value for c in at.caption)
    at.slider(key="aug_n").set_value(4).run()
    assert [len(a) for _, a in previews(at)] == [4, 4]


def test_settings_json_download_and_upload(workspace, open_page):
    at = open_page()
    assert at.get("download_button"), "no download button for the settings"
    wanted = {**AugmentConfig().to_dict(), "rotation_range": 10.0, "vertical_flip": True, "fill_mode": "reflect"}
    at.file_uploader(key="aug_json_0").set_value(("mine.json", json.dumps(wanted).encode(), "application/json"))
    at.run()
    assert not at.exception
    assert at.session_state["augment"] == wanted
    assert at.slider(key="aug_rotation_range").value == 10.0
    assert at.selectbox(key="aug_fill_mode").value == "reflect"
    assert any("Loaded the settings" in s.value for s in at.success)

    # A bad file is explained and changes nothing.
    at.file_uploader(key="aug_json_1").set_value(("bad.json", b'{"rotation_range": 500}', "application/json"))
    at.run()
    assert not at.exception
    assert any("must be between 0.0 and 180.0" in e.value for e in at.error), [e.value for e in at.error]
    assert at.session_state["augment"] == wanted


def test_uploaded_photo_is_previewed(workspace, tmp_path, make_image, open_page):
    png = make_image(tmp_path / "mine.png", (30, 120, 200), size=(64, 48)).read_bytes()
    at = open_page()
    at.multiselect(key="aug_pick").set_value([])
    at.file_uploader(key="aug_upload").set_value(("mine.png", png, "image/png"))
    at.run()
    assert not at.exception
    assert at.multiselect(key="aug_pick").value == []  # the emptied choice is kept, not reset to the default
    assert any("your photo · mine.png" in m.value.replace("\\", "") for m in at.markdown)
    assert [len(a) for _, a in previews(at)] == [N]


def test_a_preset_sets_every_field_and_is_recognised(workspace, open_page):
    from core.augment import PRESETS

    at = open_page()
    assert at.selectbox(key="aug_preset").value == "natural"  # the default is the "natural" preset
    at.selectbox(key="aug_preset").set_value("documents").run()
    assert not at.exception
    assert at.session_state["augment"] == PRESETS["documents"].config().to_dict()
    assert at.slider(key="aug_rotation_range").value == 0.0 and not at.checkbox(key="aug_horizontal_flip").value
    at.slider(key="aug_rotation_range").set_value(5.0).run()
    assert at.selectbox(key="aug_preset").value == "custom"
