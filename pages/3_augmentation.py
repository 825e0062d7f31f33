"""Augmentation preview: set the random variations training uses and see them on your own photos."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import streamlit as st

from core.augment import (
    DEFAULT_PRESET,
    FIELD_HELP,
    FILL_MODES,
    PRESETS,
    AugmentConfig,
    AugmentError,
    default_augment,
    matching_preset,
    preview,
)
from core.backbones import BackboneError, get_backbone
from core.errors import FewShotError
from core.images import load_rgb
from core.workspace import workspace_root
from ui.common import current_dataset
from ui.dataset_views import IMAGE_TYPES, array_grid, flash, md, show_flash, synced
from ui.frame import require_frame
from ui.layout import sticky
from ui.state import init_state

require_frame(__file__)

init_state()
st.session_state.setdefault("aug_preview_n", 8)
st.session_state.setdefault("aug_preview_seed", 0)
st.session_state.setdefault("aug_json_counter", 0)

# Field -> (label, slider step). The order is the order on the page; help and ranges come from core.
# How a slider shows its value: whole degrees ("40°", not "40.00"), fractions to the step's precision.
FORMATS = {"rotation_range": "%.0f°", "shear_range": "%.3f"}
LABELS = {
    "enabled": ("Use augmentation in training", None),
    "rotation_range": ("Rotation (degrees)", 1.0),
    "width_shift_range": ("Sideways shift (fraction of width)", 0.01),
    "height_shift_range": ("Up/down shift (fraction of height)", 0.01),
    "shear_range": ("Shear (radians)", 0.005),
    "zoom_range": ("Zoom (fraction)", 0.01),
    "horizontal_flip": ("Mirror left-right", None),
    "vertical_flip": ("Flip upside down", None),
    "brightness_range": ("Brightness (fraction)", 0.01),
    "contrast_range": ("Contrast (fraction)", 0.01),
    "fill_mode": ("Fill the empty corners by", None),
}
FILL_LABELS = {"nearest": "copying the nearest edge", "reflect": "mirroring the picture",
               "wrap": "repeating it like tiles", "constant": "painting them black"}


# ---------------------------------------------------------------------------------------------- callbacks


def _apply_widgets() -> None:
    """Any setting changed: rebuild the config from all the widgets and store it (what training will use)."""
    values = {name: st.session_state[f"aug_{name}"] for name in LABELS}
    try:
        st.session_state["augment"] = AugmentConfig.from_dict(values).to_dict()
    except AugmentError as exc:
        flash("aug", "error", f"That setting cannot be used: {md(exc)}")


def _apply_preset() -> None:
    name = st.session_state["aug_preset"]
    if name in PRESETS:
        st.session_state["augment"] = PRESETS[name].config().to_dict()
        flash("aug", "success", f"Preset **{md(PRESETS[name].title)}**: {md(PRESETS[name].description)}")


def _use_preset(name: str) -> None:
    st.session_state["aug_preset"] = name
    _apply_preset()


def _check_presets(root: str) -> None:
    """Train a head per preset on cached features of augmented copies (TensorFlow loads here, on the click)."""
    from core.augment_check import check_presets

    try:
        with st.spinner("Training a head per preset on augmented copies of your photos…"):
            scores = check_presets(root, st.session_state["val_split"], st.session_state["seed"],
                                   st.session_state["backbone"])
    except (FewShotError, OSError) as exc:
        flash("aug", "error", f"The check could not run: {md(exc)}")
        return
    st.session_state["aug_check"] = {"root": root, "scores": [vars(s) for s in scores]}


def _reset() -> None:
    st.session_state["augment"] = default_augment().to_dict()
    flash("aug", "success", f"Back to the default: **{md(PRESETS[DEFAULT_PRESET].title)}**.")


def _load_json(uploader_key: str) -> None:
    upload = st.session_state.get(uploader_key)
    if upload is None:
        return
    st.session_state["aug_json_counter"] += 1  # a fresh uploader: the same file can be loaded again later
    try:
        config = AugmentConfig.from_json(upload.getvalue().decode("utf-8"))
    except UnicodeDecodeError:
        flash("aug", "error", f"{md(upload.name)} is not a text file of settings.")
        return
    except AugmentError as exc:
        flash("aug", "error", f"The settings in {md(upload.name)} cannot be used: {md(exc)}")
        return
    st.session_state["augment"] = config.to_dict()
    flash("aug", "success", f"Loaded the settings from {md(upload.name)}.")


def _new_samples() -> None:
    st.session_state["aug_preview_seed"] += 1


# ---------------------------------------------------------------------------------------------- preview


@st.cache_data(max_entries=64, show_spinner="Making augmented samples…")
def augmented_samples(path: str, mtime_ns: int, config_json: str, n: int, seed: int, size: int) -> np.ndarray:
    """`n` augmented versions of one photo at the model's input size (cached on file, settings and seed)."""
    image = load_rgb(path, max_side=2 * size)
    return preview(image, AugmentConfig.from_json(config_json), n=n, seed=seed, size=size)


ORIGINAL_JSON = AugmentConfig(enabled=False).to_json()  # no augmentation: just the model's resize


def saved_upload(upload) -> Path:
    """An uploaded photo on disk, named by its content, so reruns hit the preview cache."""
    data = upload.getvalue()
    folder = workspace_root() / "cache" / "preview-uploads"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (hashlib.sha1(data).hexdigest()[:16] + Path(upload.name).suffix.lower())
    if not path.exists():
        path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------- page

st.title("Augmentation preview")
st.markdown(
    "With few photos, a model easily learns things that do not matter: where the object sits, which way it faces, "
    "how bright the room was. **Augmentation** shows it random variations of the training photos (turned, shifted, "
    "zoomed, mirrored…) so it learns what does *not* change the answer. What you see here is **exactly what "
    "training uses**: the preview runs the same Keras `Random*` layers that sit in front of the model. Augmentation "
    "is used by *fine-tuning* and *from scratch* training, and by the quick *bottleneck* training when you ask it "
    "for augmented copies; it never touches validation photos or predictions.")

try:
    config = AugmentConfig.from_dict(st.session_state["augment"])
except AugmentError as exc:
    st.error(f"The stored augmentation settings cannot be used ({md(exc)}); showing the default "
             f"({md(PRESETS[DEFAULT_PRESET].title)}) instead.")
    config = default_augment()
    st.session_state["augment"] = config.to_dict()

settings, shown = st.columns([1, 2], gap="large")

# --- settings
with settings:
    st.subheader("Settings")
    show_flash("aug")
    preset_names = ["custom", *PRESETS]
    st.session_state["aug_preset"] = matching_preset(config) or "custom"
    st.selectbox("Start from a preset", preset_names, key="aug_preset", on_change=_apply_preset,
                 format_func=lambda n: PRESETS[n].title if n in PRESETS else "Custom (your own settings)",
                 help="Natural photos: small changes. Seen from above/microscope: any turn and flips. Documents: "
                      "small shifts only. The check below measures which suits your photos.")
    check_ds = current_dataset(required=False)
    if check_ds is not None:
        st.button("Which suits my photos?", key="aug_check_button", on_click=_check_presets,
                  args=(str(check_ds.root),), icon=":material/science:",
                  help="Trains a quick head per preset on augmented copies of your training photos (pretrained "
                       "features, cached) and scores each on the validation photos. Seconds to a minute.")
        result = st.session_state.get("aug_check")
        if result and result["root"] == str(check_ds.root):
            best = result["scores"][0]
            st.table([{"preset": r["title"],
                       "validation accuracy": f"{r['val_accuracy']:.0%} of {r['n_val']} photos",
                       "validation loss": f"{r['val_loss']:.3f}"} for r in result["scores"]])
            st.success(f"Recommended for these photos: **{md(best['title'])}** (best validation accuracy, then "
                       f"lowest loss). One photo is {100 / best['n_val']:.1f} points here: close scores are a tie.")
            if st.session_state["aug_preset"] != best["preset"]:
                st.button(f"Use {best['title']}", key="aug_use_best", on_click=_use_preset, args=(best["preset"],),
                          icon=":material/check:")
    values = config.to_dict()
    for name, (label, step) in LABELS.items():
        help_text, lo, hi = FIELD_HELP[name]
        key = f"aug_{name}"
        st.session_state[key] = values[name]
        common = dict(key=key, on_change=_apply_widgets, disabled=name != "enabled" and not config.enabled)
        if name in ("enabled", "horizontal_flip", "vertical_flip"):
            (st.toggle if name == "enabled" else st.checkbox)(label, **common)
        elif name == "fill_mode":
            st.selectbox(label, FILL_MODES, format_func=FILL_LABELS.get, **common)
        else:
            st.slider(label, float(lo), float(hi), step=step, format=FORMATS.get(name, "%.2f"), **common)
        st.caption(help_text if lo is None else f"{help_text} Range {lo:g} to {hi:g}.")

    st.button("Reset to the default", key="aug_reset", on_click=_reset, icon=":material/restart_alt:")
    st.download_button("Download these settings (JSON)", config.to_json(), file_name="augmentation.json",
                       mime="application/json", key="aug_download", icon=":material/download:")
    json_key = f"aug_json_{st.session_state['aug_json_counter']}"
    st.file_uploader("Load settings from a JSON file", type="json", key=json_key, on_change=_load_json,
                     args=(json_key,), help="A file downloaded here, or the 'augment' part of a run's settings.")

# --- preview
# Sticky (ui.layout): it stays in view while the sliders further down the settings are moved.
with shown, sticky("aug_preview"):
    st.subheader("Preview")
    try:
        backbone = get_backbone(st.session_state["backbone"])
        size, size_note = backbone.input_size, f"the input size of {backbone.title}"
    except BackboneError:
        size, size_note = 224, "the usual input size"
    st.caption(f"Photos are shown at {size}×{size} pixels, {size_note}: the model sees squares, so other shapes "
               f"are squeezed. Training *from scratch* uses 150×150.")

    ds = current_dataset(required=False)
    chosen: list[tuple[str, Path]] = []  # (title, file)
    if ds is not None:
        by_rel = {str(it.path.relative_to(ds.root)): it for it in ds.items}
        default = []
        for label in ds.classes[:2]:
            first = next((rel for rel, it in by_rel.items() if it.label == label), None)
            if first:
                default.append(first)
        # The choice is kept per dataset (in a plain key, so it survives visits to other pages).
        picked = st.session_state.setdefault("aug_images", {})
        if str(ds.root) not in picked:
            picked[str(ds.root)] = default
        picked[str(ds.root)] = [rel for rel in picked[str(ds.root)] if rel in by_rel]  # files may have gone
        st.session_state["aug_pick"] = picked[str(ds.root)]

        def _keep_pick(root: str = str(ds.root)) -> None:
            st.session_state["aug_images"][root] = st.session_state["aug_pick"]

        picks = st.multiselect("Photos from the dataset", list(by_rel), key="aug_pick", max_selections=4,
                               on_change=_keep_pick,
                               format_func=lambda rel: f"{by_rel[rel].label} · {by_rel[rel].path.name}",
                               help="Type a class or file name to search. Up to 4 photos.")
        chosen += [(f"{by_rel[rel].label} · {by_rel[rel].path.name}", by_rel[rel].path) for rel in picks]
    upload = st.file_uploader("…or try a photo of your own", type=IMAGE_TYPES, key="aug_upload")
    if upload is not None:
        chosen.append((f"your photo · {upload.name}", saved_upload(upload)))

    c1, c2, c3 = st.columns([2, 1, 1], vertical_alignment="bottom")
    n = c1.slider("Samples per photo", 4, 16, step=1, **synced("aug_n", "aug_preview_n"))
    seed = c2.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, **synced("aug_seed", "aug_preview_seed"),
                           help="The same seed always gives the same samples.")
    c3.button("New samples", key="aug_new_samples", on_click=_new_samples, icon=":material/casino:",
              help="Draw a new set of random variations.")

    if config.is_identity():
        st.info("Augmentation is off (or every setting is zero): training sees each photo exactly as it is, "
                "so every sample below equals the original.")
    if not chosen:
        st.info("Pick a photo above, or upload one, to see its variations.")
    config_json = config.to_json()
    for title, path in chosen:
        st.markdown(f"**{md(title)}**")
        try:
            mtime = path.stat().st_mtime_ns
            before = augmented_samples(str(path), mtime, ORIGINAL_JSON, 1, 0, size)[0]
            after = augmented_samples(str(path), mtime, config_json, int(n), int(seed), size)
        except (FewShotError, OSError) as exc:
            st.warning(f"This photo cannot be read: {md(exc)}")
            continue
        left, right = st.columns([1, 4])
        left.image(before, caption="Before (no augmentation)", width="stretch")
        with right:
            array_grid(list(after), ncols=8 if n > 8 else 4)
