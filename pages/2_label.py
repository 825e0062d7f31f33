"""Label: sort unlabelled photos into classes, fix labels, check the data before training.

Every change is a file move inside the dataset folder, recorded in its journal and undoable; deleted photos go to
a trash inside the dataset and can be restored. A trained run can suggest labels, least sure first.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import streamlit as st

from core import duplicates, labeling
from core.backbones import BackboneError, get_backbone
from core.datasets import DatasetError, Item
from core.errors import FewShotError
from core.runs import Run
from ui import labeling_views as lv
from ui.common import dataset_label, load_dataset, md, thumb
from ui.dataset_views import IMAGE_TYPES, show_flash, synced
from ui.frame import require_frame
from ui.state import dataset_path, init_state, set_dataset

require_frame(__file__)

VIEWS = {"pool": "Sort unlabelled photos", "focus": "One at a time (keyboard)", "labelled": "Labelled photos",
         "check": "Data check", "history": "History & trash"}
KIND_TITLES = {"across classes": "Across classes", "across splits": "Across train/validation",
               "unlabelled copy": "Unlabelled copies", "same class": "Within a class"}
SORTS = {"unsure": "Least sure first", "sure": "Surest first", "name": "File name"}

init_state()
st.session_state.setdefault("lbl_view_choice", "pool")
st.session_state.setdefault("lbl_upload_counter", 0)  # a new uploader key after each save: nothing saved twice
st.session_state.setdefault("lbl_skipped", [])         # photos skipped in one-at-a-time mode (this session)
st.session_state.setdefault("lbl_focus", 0)

st.title("Label")
st.caption("Sort photos into classes right here. Every change moves a file inside the dataset folder, is recorded, "
           "and can be undone; deleted photos go to a trash you can restore from.")
root = dataset_path().resolve()
show_flash("label")


# ---------------------------------------------------------------------------------------------- read-only guard
if not labeling.is_editable(root):
    copy = labeling.working_copy(root)
    st.info(f"**{md(dataset_label(root))}** is read-only: the app never changes the built-in demo or folders outside "
            f"its workspace. Make an editable copy to label or fix it; the copy becomes your current dataset.")
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    c1.text_input("Name of the copy", value="demo" if labeling.is_demo(root) else root.name, key="lbl_copy_name")
    c2.button("Make an editable copy", key="lbl_make_copy", type="primary", icon=":material/content_copy:",
              on_click=lambda: lv.make_copy(root, st.session_state.get("lbl_copy_name", "")))
    if copy is not None:
        st.button(f"Switch to your copy “{md(copy.name)}”", key="lbl_use_copy", on_click=set_dataset, args=(copy,),
                  icon=":material/swap_horiz:")
    st.stop()

try:
    for note in labeling.recover(root):
        st.warning(f"A change was interrupted earlier (the app stopped mid-way) and has been settled: {md(note)}")
    view = labeling.label_view(root)
except (FewShotError, OSError) as exc:
    st.error(f"This dataset cannot be labelled: {md(exc)}")
    st.stop()
counts = view.counts()
classes = view.classes
pool = view.unlabelled
n_trash = len(labeling.trash_items(root))

# ---------------------------------------------------------------------------------------------- counts and undo
left, right = st.columns([5, 1], vertical_alignment="center")
with left:
    chips = [f"**{len(pool)} unlabelled**"] + [f"{md(c)}: **{n}**" for c, n in counts.items()]
    chips += [f"🗑️ trash: {n_trash}"] if n_trash else []
    st.markdown(" · ".join(chips))
    if len(classes) < 2:
        st.caption("Training needs at least two classes: assign photos to two classes or more.")
right.button("Undo", key="lbl_undo", icon=":material/undo:", shortcut="U", on_click=lv.undo, args=(root,),
             disabled=labeling.can_undo(root) == 0, width="stretch",
             help="Undo the last change (a whole action: 'assign 20 photos' is undone at once). Key: U.")


# ---------------------------------------------------------------------------------------------- uploads
with st.expander("Add unlabelled photos", expanded=not pool and not view.labelled, icon=":material/upload:"):
    st.caption("Drop photos you have not sorted yet, or a .zip of them (folders in it do not matter). They are "
               "saved at once into this dataset's `unlabelled/` folder, which training ignores until you give them "
               "a class.")
    uploader_key = f"lbl_upload_{st.session_state['lbl_upload_counter']}"
    st.file_uploader("Unlabelled photos: drag photos or a .zip here, or browse", type=[*IMAGE_TYPES, "zip"],
                     accept_multiple_files=True, key=uploader_key,
                     on_change=lv.save_pool_uploads, args=(root, uploader_key, "lbl_upload_counter"))


# ---------------------------------------------------------------------------------------------- suggestions
runs, mine = labeling.suggestion_runs(root)
by_id = {run.id: run for run in runs}
run: Run | None = None
frame: pd.DataFrame | None = None
if runs:
    options = [""] + list(by_id)
    if st.session_state.get("lbl_run") not in options:
        st.session_state["lbl_run"] = mine[0] if mine else ""
    run_id = st.selectbox(
        "Suggest labels with a trained model", options, key="lbl_run",
        format_func=lambda rid: "No suggestions" if not rid else
        f"{by_id[rid].config_dict().get('name') or rid} — classes: {', '.join(by_id[rid].labels())}",
        help="A finished training guesses the class of each unlabelled photo. Label the photos it is least sure "
             "of first: they teach the next training the most.")
    run = by_id.get(run_id)
    if run is not None:
        lv.retrain_panel(run, key="lbl_retrain", dataset_root=root, primary=False)
        unknown = sorted(set(run.labels()) - set(classes))
        if unknown and classes:
            st.caption(f"This model knows classes this dataset lacks ({', '.join(unknown)}); accepting its "
                       f"suggestion creates them.")
        if pool:
            try:
                with st.spinner(f"The model looks at {lv.plural(len(pool), 'photo')}…"):
                    frame = labeling.predict_pool(run, pool)
            except (FewShotError, OSError) as exc:
                st.warning(f"No suggestions: {md(exc)}")
suggestion = labeling.suggestions_by_path(frame)


def pool_caption(path: Path) -> str:
    if path in suggestion:
        label, conf = suggestion[path]
        return f"{md(path.name)} → **{md(label)}** {conf:.0%}"
    return md(path.name)


st.radio("Show", list(VIEWS), format_func=VIEWS.get, horizontal=True, label_visibility="collapsed",
         **synced("lbl_view", "lbl_view_choice"))
mode = st.session_state["lbl_view_choice"]
sort = "name"
if suggestion and mode in ("pool", "focus"):
    sort = st.columns([1, 2])[0].selectbox("Order", list(SORTS), format_func=SORTS.get, key="lbl_sort",
                                           help="'Least sure first' shows the photos the model hesitates on "
                                                "first: labelling those teaches the next training the most.")


# ---------------------------------------------------------------------------------------------- pool grid
def pool_view() -> None:
    if not pool:
        st.info("No unlabelled photos. Add some above (*Add unlabelled photos*), or move labelled ones back here "
                "from *Labelled photos*.")
        return
    ordered = labeling.order_pool(pool, suggestion, sort)
    if frame is not None and len(frame):
        with st.container(border=True):
            st.markdown("**Accept the model's surest suggestions at once**")
            c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
            threshold = c1.slider("Accept suggestions at or above this confidence", 50, 100, 90, 5,
                                  key="lbl_threshold", format="%d%%",
                                  help="Each photo goes to the class the model predicts if it is at least this "
                                       "sure. One Undo puts them all back.")
            n = int((frame["confidence"] >= threshold / 100).sum())
            c2.button(f"Accept {lv.plural(n, 'suggestion')}", key="lbl_accept", disabled=n == 0,
                      icon=":material/done_all:", width="stretch",
                      on_click=lambda: lv.run_action(
                          "label", lambda: labeling.accept_predictions(root, frame, threshold / 100),
                          lambda ops: f"Accepted {lv.plural(len(ops), 'suggestion')} (≥ {threshold}%)."))
    st.markdown("**Tick photos, then send them to a class.** Number keys send the ticked photos to the class "
                "with that number.")
    c1, c2, c3, c4 = st.columns([3, 1, 1, 1], vertical_alignment="bottom")
    with c1:
        lv.class_picker(classes, "lbl_target")
    n_sel = len(lv.selected("lbl_sel", ordered))
    c2.button(f"Assign {n_sel}", key="lbl_assign", type="primary", disabled=not n_sel,
              icon=":material/label:", width="stretch",
              on_click=lambda: lv.assign_to_picked(root, lv.selected("lbl_sel", ordered), "lbl_target",
                                                   clear=("lbl_sel", ordered)))
    c3.button(f"Delete {n_sel}", key="lbl_delete", disabled=not n_sel, icon=":material/delete:", width="stretch",
              on_click=lambda: lv.delete(root, lv.selected("lbl_sel", ordered), clear=("lbl_sel", ordered)),
              help="Moves the ticked photos to the trash (restorable).")
    c4.button("Clear ticks", key="lbl_clear", disabled=not n_sel, width="stretch",
              on_click=lv.clear_selection, args=("lbl_sel", ordered))
    if classes:
        with st.container(horizontal=True, gap="small"):
            for i, name in enumerate(classes[:lv.MAX_SHORTCUT_CLASSES]):
                st.button(f"{i + 1} · {name}", key=f"lbl_quick_{i}", shortcut=str(i + 1), disabled=not n_sel,
                          on_click=lambda c=name: lv.assign(root, lv.selected("lbl_sel", ordered), c,
                                                            clear=("lbl_sel", ordered)),
                          help=f"Send the ticked photos to {name} (key {i + 1}).")
    shown = lv.selectable_grid(ordered, [pool_caption(p) for p in ordered], "lbl_sel", "lbl_pool_page")
    st.button("Tick all on this page", key="lbl_select_all", on_click=lv.select_all, args=("lbl_sel", shown))


# ---------------------------------------------------------------------------------------------- one at a time
def _focus_step(step: int, n: int) -> None:
    st.session_state["lbl_focus"] = max(0, min(n - 1, st.session_state["lbl_focus"] + step))


def _skip(path: Path) -> None:
    st.session_state["lbl_skipped"] = st.session_state["lbl_skipped"] + [str(path)]


def focus_view() -> None:
    skipped = set(st.session_state["lbl_skipped"])
    queue = [p for p in labeling.order_pool(pool, suggestion, sort) if str(p) not in skipped]
    if not queue:
        st.info("No unlabelled photo left to look at." + (f" You skipped {len(skipped & set(map(str, pool)))}."
                                                          if skipped & set(map(str, pool)) else ""))
        if skipped & set(map(str, pool)):
            st.button("Show the skipped photos again", key="lbl_unskip",
                      on_click=lambda: st.session_state.update(lbl_skipped=[], lbl_focus=0))
        return
    index = max(0, min(len(queue) - 1, st.session_state["lbl_focus"]))
    st.session_state["lbl_focus"] = index
    path = queue[index]
    picture, controls = st.columns([3, 2], gap="large")
    with picture:
        data = thumb(path, 720)
        if data is None:
            st.warning("This file cannot be shown (damaged?). Delete it or skip it.")
        else:
            st.image(data, width="stretch")
    with controls:
        st.markdown(f"**Photo {index + 1} of {len(queue)}** · {md(path.name)}")
        if path in suggestion:
            label, conf = suggestion[path]
            st.markdown(f"The model says **{md(label)}** ({conf:.0%} sure).")
            st.button(f"Accept: {label}", key="lbl_focus_accept", shortcut="A", type="primary", width="stretch",
                      on_click=lv.file_one, args=(root, path, label), icon=":material/check:",
                      help="File it under the suggested class (key A).")
        st.caption("Press a number key to file the photo under that class; arrows move, S skips, X deletes, "
                   "U undoes.")
        for i, name in enumerate(classes[:lv.MAX_SHORTCUT_CLASSES]):
            st.button(f"{i + 1} · {name}", key=f"lbl_focus_cls_{i}", shortcut=str(i + 1), width="stretch",
                      on_click=lv.file_one, args=(root, path, name))
        with st.popover("Other or new class", icon=":material/add:", width="stretch"):
            lv.class_picker(classes, "lbl_focus_target")
            st.button("File it there", key="lbl_focus_other", on_click=lv.file_one_picked,
                      args=(root, path, "lbl_focus_target"))
        with st.container(horizontal=True, gap="small"):
            st.button("Previous", key="lbl_prev", shortcut="Left", icon=":material/arrow_back:",
                      on_click=_focus_step, args=(-1, len(queue)), disabled=index == 0)
            st.button("Next", key="lbl_next", shortcut="Right", icon=":material/arrow_forward:",
                      on_click=_focus_step, args=(1, len(queue)), disabled=index >= len(queue) - 1)
            st.button("Skip", key="lbl_skip", shortcut="S", icon=":material/redo:", on_click=_skip, args=(path,),
                      help="Leave it unlabelled and hide it for now (key S).")
            st.button("Delete", key="lbl_focus_delete", shortcut="X", icon=":material/delete:",
                      on_click=lv.delete_one, args=(root, path), help="To the trash, restorable (key X).")


# ---------------------------------------------------------------------------------------------- labelled photos
def labelled_view() -> None:
    if not classes:
        st.info("No class yet: assign unlabelled photos to a new class first.")
        return
    if st.session_state.get("lbl_browse_class") not in classes:
        st.session_state["lbl_browse_class"] = classes[0]
    c1, c2, c3, c4, c5 = st.columns([2, 2, 1, 1, 1], vertical_alignment="bottom")
    shown_class = c1.selectbox("Class", classes, key="lbl_browse_class",
                               format_func=lambda c: f"{c} ({counts.get(c, 0)})")
    items = [image for image in view.labelled if image.label == shown_class]
    paths = [image.path for image in items]
    with c2:
        lv.class_picker([c for c in classes if c != shown_class], "lbl_relabel_target", label="Move ticked photos to")
    n_sel = len(lv.selected("lbl_lsel", paths))
    clear = ("lbl_lsel", paths)
    c3.button(f"Move {n_sel}", key="lbl_relabel", type="primary", disabled=not n_sel,
              icon=":material/drive_file_move:", width="stretch",
              on_click=lambda: lv.assign_to_picked(root, lv.selected("lbl_lsel", paths), "lbl_relabel_target",
                                                   clear=clear))
    c4.button("Unlabel", key="lbl_unlabel", disabled=not n_sel, icon=":material/label_off:", width="stretch",
              on_click=lambda: lv.unlabel(root, lv.selected("lbl_lsel", paths), clear=clear),
              help="Back to the unlabelled photos, to decide later.")
    c5.button(f"Delete {n_sel}", key="lbl_ldelete", disabled=not n_sel, icon=":material/delete:", width="stretch",
              on_click=lambda: lv.delete(root, lv.selected("lbl_lsel", paths), clear=clear))
    captions = [md(i.path.name) + (f" · {i.split}" if view.layout == "split" else "") for i in items]
    lv.selectable_grid(paths, captions, "lbl_lsel", "lbl_labelled_page")


# ---------------------------------------------------------------------------------------------- data check
def _pair_tile(item: Item, other_label: str, key: str) -> None:
    data = thumb(item.path, 240)
    if data is not None:
        st.image(data, width="stretch")
    size = duplicates.image_size(item.path)
    where = "unlabelled" if item.label == duplicates.UNLABELLED else f"**{md(item.label)}** · {item.split}"
    st.caption(f"{md(item.path.name)} · {where}" + (f" · {size[0]}×{size[1]}" if size else ""))
    with st.container(horizontal=True, gap="small"):
        st.button("Delete", key=f"{key}_del", icon=":material/delete:",
                  on_click=lambda: lv.delete(root, [item.path]), help="To the trash (restorable).")
        if duplicates.UNLABELLED not in (other_label, item.label) and other_label != item.label:
            st.button(f"Move to {other_label}", key=f"{key}_mv", icon=":material/drive_file_move:",
                      on_click=lambda: lv.assign(root, [item.path], other_label),
                      help="If this one is filed under the wrong class.")


def check_view() -> None:
    st.caption("Before training: the same picture twice (even resized or recompressed) and pictures far too small "
               "for the network.")
    try:
        ds = load_dataset(root, st.session_state["val_split"], st.session_state["test_split"],
                          st.session_state["seed"])
        items = ds.items
    except DatasetError as exc:
        st.warning(f"The dataset cannot be trained on yet ({md(exc)}), so train/validation splits are unknown: "
                   f"checking within and across classes only.")
        items = list(view.labelled)
    if not items:
        st.info("No labelled photos to check yet.")
        return
    items = items + [Item(path, duplicates.UNLABELLED, "pool") for path in pool]
    distance = st.slider("How alike counts as a duplicate", 0, 16, duplicates.DEFAULT_MAX_DISTANCE,
                         key="lbl_dup_distance",
                         help="Differences allowed between two pictures' fingerprints (64 points). 0: the same "
                              "picture; up to about 8: resized, recompressed or slightly edited copies.")
    with st.spinner("Comparing pictures…"):
        pairs = duplicates.find_near_duplicates(items, distance)
    found = duplicates.summary(pairs)
    st.markdown("**Near-duplicate pairs**")
    cols = st.columns(len(found))
    for col, (kind, n) in zip(cols, found.items()):
        col.metric(KIND_TITLES[kind], n, help=duplicates.KIND_HELP[kind])
    if not pairs:
        st.success("No near-duplicate pictures.")
    for pair in pairs[:20]:
        key = lv.path_key("lbl_dup", f"{pair.a.path}|{pair.b.path}")
        with st.container(border=True):
            a, b, about = st.columns([2, 2, 3])
            with a:
                _pair_tile(pair.a, pair.b.label, f"{key}_a")
            with b:
                _pair_tile(pair.b, pair.a.label, f"{key}_b")
            about.markdown(f"**{pair.kind.capitalize()}** · {'identical' if pair.distance == 0 else 'very alike'} "
                           f"(difference {pair.distance}/64)")
            about.caption(pair.help + (" Delete one copy, or move one to the other's class."
                                       if pair.kind == "across classes" else " Delete one copy."))
    if len(pairs) > 20:
        st.caption(f"The first 20 of {len(pairs)} pairs are shown; fix these and the next ones appear.")

    try:
        input_size = get_backbone(st.session_state["backbone"]).input_size
    except BackboneError:
        input_size = 224
    min_side = input_size // 2
    small = duplicates.small_images(items, min_side)
    st.markdown(f"**Small pictures** (shorter side under {min_side} pixels; the network looks at "
                f"{input_size}×{input_size}, so these are mostly blur to it): {len(small)}")
    for start in range(0, min(len(small), 24), 6):
        for col, entry in zip(st.columns(6), small[start:start + 6]):
            with col.container(border=True):
                data = thumb(entry.item.path, 160)
                if data is not None:
                    st.image(data, width="stretch")
                st.caption(f"{md(entry.item.path.name)} · {md(entry.item.label)} · {entry.width}×{entry.height}")
                st.button("Delete", key=lv.path_key("lbl_small", entry.item.path), icon=":material/delete:",
                          on_click=lambda p=entry.item.path: lv.delete(root, [p]))


# ---------------------------------------------------------------------------------------------- history, trash
def history_view() -> None:
    ops = labeling.history(root)
    trash = labeling.trash_items(root)
    st.markdown(f"**Trash** ({len(trash)})")
    if not trash:
        st.caption("Empty. Deleted photos wait here until you restore them.")
    else:
        st.button(f"Restore all {len(trash)}", key="lbl_restore_all", icon=":material/restore_from_trash:",
                  on_click=lv.restore, args=(root, None))
        for start in range(0, min(len(trash), 48), 6):
            for col, item in zip(st.columns(6), trash[start:start + 6]):
                with col.container(border=True):
                    data = thumb(item.path, 160)
                    if data is not None:
                        st.image(data, width="stretch")
                    st.caption(f"was {md(item.original.relative_to(root).as_posix())}")
                    st.button("Restore", key=f"lbl_restore_{item.op_id}", icon=":material/restore_from_trash:",
                              on_click=lv.restore, args=(root, [item.op_id]))
    st.markdown(f"**History** ({len(ops)} file moves, newest first)")
    if ops:
        st.dataframe(pd.DataFrame([{
            "when": datetime.fromtimestamp(op.time).strftime("%Y-%m-%d %H:%M:%S"), "action": op.op,
            "from": op.src, "to": op.dst, "state": op.state, "note": op.note} for op in ops[:1000]]),
            hide_index=True, key="lbl_history", width="stretch")
        st.caption(f"Recorded in `{labeling.journal_path(root).relative_to(root)}` inside the dataset folder.")


{"pool": pool_view, "focus": focus_view, "labelled": labelled_view, "check": check_view,
 "history": history_view}[mode]()
