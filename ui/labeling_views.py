"""Streamlit pieces for labelling: selectable image grids, the fix widgets the Predictions page reuses, retrain.

Every change runs in a widget callback, before the script reruns, so the page that follows already shows the
new counts and grids. Errors become messages (flash or toast), never tracebacks.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import streamlit as st

from core import labeling
from core.engine import retrain
from core.errors import FewShotError
from core.retraining import compare_on_same_photos, retrain_plan
from core.run_summary import saved_model_note
from core.runs import ACTIVE_STATES, Run, RunError, get_run, retrained_from
from ui.common import dataset_label, md, poll_seconds, thumb, unsaved_uploads
from ui.dataset_views import flash
from ui.frame import open_page
from ui.state import set_dataset

NEW_CLASS = "➕ New class…"
MAX_SHORTCUT_CLASSES = 9  # number keys 1–9
_ERRORS = (FewShotError, OSError)


def path_key(prefix: str, path: str | Path) -> str:
    """A stable widget key for an image: the same file keeps its checkbox state across reruns."""
    return f"{prefix}_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"


def selected(prefix: str, paths: Sequence[Path]) -> list[Path]:
    return [p for p in paths if st.session_state.get(path_key(prefix, p))]


def clear_selection(prefix: str, paths: Sequence[Path]) -> None:
    for p in paths:
        if path_key(prefix, p) in st.session_state:
            st.session_state[path_key(prefix, p)] = False


def select_all(prefix: str, paths: Sequence[Path]) -> None:
    for p in paths:
        st.session_state[path_key(prefix, p)] = True


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# ---------------------------------------------------------------------------------------------- actions


def run_action(section: str, action: Callable[[], list], done: Callable[[list], str],
               clear: tuple[str, Sequence[Path]] | None = None) -> None:
    """Run a labelling change in a callback and queue what happened (or why not) for the page to show."""
    try:
        ops = action()
    except _ERRORS as exc:
        flash(section, "error", f"Nothing was changed: {md(exc)}")
        return
    if clear:
        clear_selection(*clear)
    if ops:
        flash(section, "success", done(ops))


def assign(root: Path, paths: Sequence[Path], class_name: str, section: str = "label",
           clear: tuple[str, Sequence[Path]] | None = None) -> None:
    if not paths:
        flash(section, "warning", "Select some photos first (tick their boxes).")
        return
    run_action(section, lambda: labeling.move_to_class(root, paths, class_name),
               lambda ops: f"Moved {plural(len(ops), 'photo')} to **{md(class_name.strip())}**.", clear)


def delete(root: Path, paths: Sequence[Path], section: str = "label",
           clear: tuple[str, Sequence[Path]] | None = None) -> None:
    if not paths:
        flash(section, "warning", "Select some photos first (tick their boxes).")
        return
    run_action(section, lambda: labeling.delete_images(root, paths),
               lambda ops: f"Moved {plural(len(ops), 'photo')} to the trash (restore or undo any time).", clear)


def unlabel(root: Path, paths: Sequence[Path], section: str = "label",
            clear: tuple[str, Sequence[Path]] | None = None) -> None:
    if not paths:
        flash(section, "warning", "Select some photos first (tick their boxes).")
        return
    run_action(section, lambda: labeling.move_to_pool(root, paths),
               lambda ops: f"Put {plural(len(ops), 'photo')} back among the unlabelled ones.", clear)


def undo(root: Path, section: str = "label") -> None:
    run_action(section, lambda: labeling.undo(root),
               lambda ops: f"Undone: {plural(len(ops), 'photo')} put back where {'it' if len(ops) == 1 else 'they'}"
                           f" were.")


def restore(root: Path, op_ids: Sequence[str] | None, section: str = "label") -> None:
    run_action(section, lambda: labeling.restore_from_trash(root, op_ids),
               lambda ops: f"Restored {plural(len(ops), 'photo')} from the trash.")


def make_copy(source: Path, name: str, section: str = "label") -> None:
    try:
        copy = labeling.make_editable_copy(source, name or source.name)
    except _ERRORS as exc:
        flash(section, "error", f"The copy could not be made: {md(exc)}")
        return
    set_dataset(copy)
    flash(section, "success", f"Made the editable copy **{md(copy.name)}** of {md(dataset_label(source))} and "
                              f"switched to it. Changes happen in the copy; the original stays as it was.")


def save_pool_uploads(root: Path, uploader_key: str, counter_key: str, section: str = "label") -> None:
    """Save the photos just dropped into the uploader into the unlabelled pool (uploads live only until the next
    rerun), then give the uploader a new key (`counter_key` + 1) so nothing is saved twice."""
    files = unsaved_uploads(st.session_state.get(uploader_key))
    if not files:
        return
    try:
        report = labeling.add_unlabelled_uploads(root, [(f.name, f.getvalue()) for f in files])
    except _ERRORS as exc:
        flash(section, "error", f"Nothing was saved: {md(exc)}")
        return
    st.session_state[counter_key] += 1
    if report.saved:
        flash(section, "success", f"Added {plural(len(report.saved), 'photo')} to the unlabelled pool.")
    if report.skipped:
        flash(section, "warning",
              "Skipped: " + "; ".join(f"{md(name)} ({md(why)})" for name, why in report.skipped[:10]))


def _one_change(action: Callable[[], object], failed: str, done: str, icon: str, section: str | None) -> None:
    """A change to one photo, told in a toast so the view stays where it is. A failure is queued for `section`
    (the Label page shows it above its views) or, without one (fix widgets on other pages), toasted too."""
    try:
        action()
    except _ERRORS as exc:
        if section:
            flash(section, "error", f"{failed}: {md(exc)}")
        else:
            st.toast(f"{failed}: {md(exc)}", icon=":material/error:")
        return
    st.toast(done, icon=icon)


def file_one(root: Path, path: Path, class_name: str, section: str = "label") -> None:
    """File one photo under `class_name` (the one-at-a-time view)."""
    _one_change(lambda: labeling.move_to_class(root, [path], class_name), "Not moved",
                f"{md(path.name)} → {md(class_name)}", ":material/label:", section)


def file_one_picked(root: Path, path: Path, key: str, section: str = "label") -> None:
    """`file_one` to the class chosen in the `class_picker` with this `key`, read at click time."""
    class_name = picked_class(key)
    if class_name:
        file_one(root, path, class_name, section)
    else:
        flash(section, "warning", "Type a name for the new class first.")


def delete_one(root: Path, path: Path, section: str = "label") -> None:
    """Move one photo to the trash (the one-at-a-time view)."""
    _one_change(lambda: labeling.delete_images(root, [path]), "Not deleted", f"{md(path.name)} → trash",
                ":material/delete:", section)


# ---------------------------------------------------------------------------------------------- grids


def image_tile(path: Path, caption: str, key: str, side: int = 200) -> None:
    """A photo with a checkbox under it (the checkbox's key is the selection)."""
    data = thumb(path, side)
    if data is None:
        st.caption("(cannot be shown)")
    else:
        st.image(data, width="stretch")
    st.checkbox(caption, key=key)


def selectable_grid(paths: Sequence[Path], captions: Sequence[str], prefix: str, page_key: str,
                    ncols: int = 6, page_size: int = 24) -> list[Path]:
    """A paged grid of photos with checkboxes; returns the paths shown on this page."""
    if not paths:
        return []
    n_pages = max(1, -(-len(paths) // page_size))
    page = st.pagination(n_pages, key=page_key) if n_pages > 1 else 1
    page = min(page or 1, n_pages)
    start = (page - 1) * page_size
    shown = list(paths[start:start + page_size])
    shown_captions = list(captions[start:start + page_size])
    for row in range(0, len(shown), ncols):
        for col, path, caption in zip(st.columns(ncols), shown[row:row + ncols], shown_captions[row:row + ncols]):
            with col.container(border=True):
                image_tile(path, caption, path_key(prefix, path))
    if n_pages > 1:
        st.caption(f"Page {page} of {n_pages} ({len(paths)} photos). Selection applies to this page.")
    return shown


def class_picker(classes: Sequence[str], key: str, label: str = "Class") -> None:
    """A class selector with a 'new class' option that reveals a name field. Read the choice with `picked_class`
    inside the callback (at click time), so a name typed just before the click counts."""
    options = list(classes) + [NEW_CLASS]
    if st.session_state.get(key) not in options:
        st.session_state[key] = options[0]
    choice = st.selectbox(label, options, key=key, help="Where the photos go. Pick an existing class, or "
                                                        "'New class…' to type a name.")
    if choice == NEW_CLASS:
        st.text_input("New class name", key=f"{key}_new", placeholder="e.g. dogs",
                      help="Letters, digits, spaces, '-', '_' or '.'; the class folder gets this name.")


def picked_class(key: str) -> str:
    choice = st.session_state.get(key, "")
    return (st.session_state.get(f"{key}_new") or "").strip() if choice == NEW_CLASS else choice


def assign_to_picked(root: Path, paths: Sequence[Path], key: str, section: str = "label",
                     clear: tuple[str, Sequence[Path]] | None = None) -> None:
    class_name = picked_class(key)
    if not class_name:
        flash(section, "warning", "Type a name for the new class first.")
        return
    assign(root, paths, class_name, section, clear)


# ---------------------------------------------------------------------------------------------- fixes elsewhere


def _fix_move(copy: Path, path: Path, widget_key: str) -> None:
    class_name = st.session_state.get(widget_key)
    _one_change(lambda: labeling.move_to_class(copy, [path], class_name), "Not moved",
                f"{md(path.name)} → **{md(class_name)}**. Retrain to see the effect.", ":material/check:", None)


def _fix_delete(copy: Path, path: Path) -> None:
    _one_change(lambda: labeling.delete_images(copy, [path]), "Not deleted",
                f"{md(path.name)} is in the trash (restore it on the Label page).", ":material/delete:", None)


def _fix_copy(dataset_root: Path) -> None:
    try:
        copy = labeling.make_editable_copy(dataset_root, dataset_root.name)
    except _ERRORS as exc:
        st.toast(f"The copy could not be made: {md(exc)}", icon=":material/error:")
        return
    set_dataset(copy)
    st.toast(f"Made the editable copy **{md(copy.name)}**: fixes go there; retrain to train on it.",
             icon=":material/content_copy:")


def image_now(dataset_root: Path, image_path: Path) -> Path | None:
    """Where a photo a run recorded is now: followed through the dataset's (or its editable copy's) journal of
    fixes, so a photo moved to another class keeps its thumbnail, in the user's dataset as in the demo's copy."""
    image_path = Path(image_path)
    try:
        copy = labeling.working_copy(dataset_root, prefer=st.session_state.get("dataset"))
        found = labeling.counterpart(dataset_root, image_path, copy) if copy is not None else None
    except _ERRORS:
        found = None
    if found is not None and not labeling.in_trash(copy, found):
        return found
    return image_path if image_path.exists() else None


def fix_controls(dataset_root: Path, image_path: Path, classes: list[str], key: str) -> None:
    """Small widgets to fix one image where it is shown (a wrong prediction, a confusion cell's photo):
    move it to the right class, or delete it (to the dataset's trash; undo and restore on the Label page).

    `dataset_root` and `image_path` are as the run recorded them. A read-only dataset (the built-in demo) is
    fixed in its editable copy in the workspace: the image is found there by its place in the dataset and the
    copy's journal; without a copy a button offers to make one.
    """
    dataset_root, image_path = Path(dataset_root), Path(image_path)
    copy = labeling.working_copy(dataset_root, prefer=st.session_state.get("dataset"))
    if copy is None:
        st.button("Make an editable copy to fix", key=f"{key}_copy", on_click=_fix_copy, args=(dataset_root,),
                  icon=":material/content_copy:", type="tertiary",
                  help=f"{dataset_label(dataset_root)} is read-only. This copies it into your workspace; fixes "
                       f"and retraining then use the copy.")
        return
    current = labeling.counterpart(dataset_root, image_path, copy)
    if current is None:
        st.caption("Not in the dataset any more.")
        return
    if labeling.in_trash(copy, current):
        st.caption("🗑️ Deleted: undo or restore it on the Label page.")
        return
    label = labeling.label_of(copy, current)
    options = list(dict.fromkeys(list(classes) + ([label] if label else [])))
    widget_key = f"{key}_class"
    if st.session_state.get(widget_key) not in options:
        st.session_state[widget_key] = label if label in options else options[0]
    st.selectbox("Right class", options, key=widget_key, label_visibility="collapsed",
                 help="The class this photo really belongs to.")
    with st.container(horizontal=True, gap="small"):
        st.button("Move", key=f"{key}_move", on_click=_fix_move, args=(copy, current, widget_key),
                  icon=":material/drive_file_move:", disabled=st.session_state[widget_key] == label,
                  help="Move the photo to the class chosen above (undo on the Label page).")
        st.button("Delete", key=f"{key}_delete", on_click=_fix_delete, args=(copy, current),
                  icon=":material/delete:", help="Move the photo to the dataset's trash (restorable).")
    if label and image_path.parent.name != label:
        st.caption(f"Now filed under **{md(label)}**.")


def _retrain(run: Run, data: Path, state_key: str) -> None:
    # One at a time per button: a double click (or a click replayed by a rerun) must not queue a second copy.
    started = st.session_state.get(state_key)
    if started:
        try:
            if get_run(started).status().state in ACTIVE_STATES:
                st.toast(f"Already retraining (`{started}`): it takes seconds.", icon=":material/hourglass_top:")
                return
        except RunError:
            pass
    try:
        new = retrain(run, data=str(data))
    except _ERRORS as exc:
        st.toast(f"The retraining could not start: {md(exc)}", icon=":material/error:")
        return
    st.session_state[state_key] = new.id
    st.session_state["watch_run"] = new.id  # the Training page follows it
    mode = run.config().mode
    st.toast("Retraining started: only changed photos go through the network again." if mode == "bottleneck" else
             f"Retraining started, like the original run ({mode}): this takes as long as it did.",
             icon=":material/replay:")


def retrain_panel(run: Run, key: str, dataset_root: Path | None = None, primary: bool = True) -> None:
    """'Retrain with my fixes' and, under it, the retraining it started, live, then its result.

    One fragment: the click reruns this panel only, not the page around it. On the Predictions page a whole rerun
    (its grid of photos, each with its fix controls) took longer than a bottleneck retrain itself, and the panel's
    poll could not start before it ended. The page reruns once the result is on screen."""
    st.fragment(_retrain_panel)(run, key, dataset_root, primary)


def _retrain_panel(run: Run, key: str, dataset_root: Path | None, primary: bool) -> None:
    retrain_button(run, key, dataset_root, primary)
    retrain_status(key)


def retrain_button(run: Run, key: str, dataset_root: Path | None = None, primary: bool = True) -> None:
    """'Retrain with my fixes': a run like `run` (same mode, backbone, settings) on the fixed dataset (the run's
    own, or its editable copy when the run was trained on the read-only demo). Cached features make it take seconds.
    `retrain_status` shows what it started (`retrain_panel` draws both)."""
    data = Path(run.config().data)
    target = dataset_root or labeling.working_copy(data, prefer=st.session_state.get("dataset")) or data
    state_key = f"{key}_started"
    plan = retrain_plan(run, target)
    st.button("Retrain with my fixes", key=key, on_click=_retrain, args=(run, target, state_key),
              icon=":material/replay:", type="primary" if primary else "secondary",
              help=f"Trains again on {dataset_label(target)} as it is now. {plan.describe()} Photos the network "
                   f"has already seen cost nothing{': it takes seconds' if run.config().mode == 'bottleneck' else ''}.")
    if plan.differences:
        st.caption("The retrain differs from this run in one way: " + "; ".join(plan.differences) + ".")


def retrain_status(key: str) -> None:
    """Under a retrain_button (same `key`): the retraining it started, live, then its result and a button that
    shows the new run's predictions."""
    started = st.session_state.get(f"{key}_started")
    if not started:
        return
    try:
        new = get_run(started)
    except RunError:  # deleted meanwhile (the Runs page, another tab)
        st.session_state.pop(f"{key}_started", None)
        return
    active = new.status().state in ACTIVE_STATES
    # Poll while it trains (a bottleneck retrain takes about a second: five times a second, as the Training page
    # does); the poll that finds it ended shows the result at once, then reruns the page, so the new run is listed
    # everywhere. Ended, it is drawn in place: "Show the new results" must not sit in a fragment nested in
    # `retrain_panel`'s (its click would rerun that inner fragment alone, and the switch of page was lost).
    if active:
        st.fragment(_retrain_progress, run_every=poll_seconds(new))(new, active, key)
    else:
        _retrain_progress(new, active, key)


def _retrain_progress(new: Run, was_active: bool, key: str) -> None:
    status = new.status()
    state = status.state
    if state in ACTIVE_STATES:
        st.progress(float(status.progress or 0.0),
                    text=f"Retraining `{new.id}`: {status.message or state}…")
        st.page_link("pages/4_training.py", label="Watch its curves", icon=":material/monitoring:")
        return
    # Found ended by the poll: the result at once, but not its button. A button drawn in this poll fragment belongs
    # to it; clicked before the whole page has rerun, that click reruns a fragment that no longer exists and is
    # lost (a browser test on a loaded machine did this). The whole page's rerun draws it, outside the poll.
    _retrain_result(new, status, key, with_button=not was_active)
    if was_active:
        st.rerun()  # after the result is on screen: the whole page, so the finished run joins the run lists


def _retrain_result(new: Run, status, key: str, with_button: bool = True) -> None:
    state = status.state
    if state != "done" or not new.has_results():
        st.error(f"The retraining `{new.id}` ended {state}: {md(status.error or status.message)}")
        st.page_link("pages/4_training.py", label="See it on the Training page", icon=":material/monitoring:")
        return
    after = new.metrics() or {}
    source = retrained_from(new.config_dict().get("name"))
    try:
        previous = (get_run(source).metrics() or {}) if source else {}
    except RunError:
        previous = {}
    # From the click (the run folder's creation) to the results: what the user waited.
    seconds = (status.finished_at or 0) - (status.created_at or status.started_at or 0)
    change = ""
    try:
        same = compare_on_same_photos(get_run(source), new) if source else None
    except (RunError, OSError):
        same = None
    if same is not None:
        change = f": {same.sentence()}"
    elif after.get("val_accuracy") is not None and previous.get("val_accuracy") is not None:
        change = (f": validation accuracy {after['val_accuracy']:.0%} on {after.get('n_val', '?')} photos (was "
                  f"{previous['val_accuracy']:.0%} on {previous.get('n_val', '?')}; no photo in common to compare)")
    st.success(f"Retrained in {seconds:.1f} s{change}; {after.get('n_extracted', 0)} photo(s) went through the "
               f"network again.", icon=":material/check_circle:")
    if note := saved_model_note(after):
        st.caption(note)
    if not with_button:
        return
    # Not a callback: a widget inside a fragment reruns only the fragment, and the page has to change (open_page).
    if st.button("Show the new results", key=f"{key}_show", icon=":material/grid_view:", type="primary"):
        st.session_state["run_id"] = new.id  # the Predictions page's run picker follows it
        st.session_state.pop("pred_run", None)
        st.session_state.pop(f"{key}_started", None)  # shown: the retraining's note has done its job
        open_page("pages/5_predictions.py")


def suspects_queue(run: Run, classes: list[str], dataset_root: Path, per_row: int = 6) -> None:
    """The photos whose labels the cross-validated head most doubts (confident learning, `core.suspects`), most
    suspicious first, each with its fix preset to the class the head believes: one click on Move relabels it."""
    from core.suspects import suspicious_labels

    try:
        queue = suspicious_labels(run.oof(), classes)
    except (OSError, ValueError) as exc:
        st.caption(f"The suspicious-labels queue could not be read: {md(exc)}")
        return
    if queue.empty:
        if run.oof() is not None:
            st.caption("No label looks suspicious: the cross-validated model agrees with every label it was sure "
                       "about.")
        return
    st.markdown(f"**Check these labels first** — {len(queue)} photo(s) that a model which never trained on them "
                f"confidently puts in another class (cross-validated; the most doubtful first).")
    for start in range(0, len(queue), per_row):
        for col, (i, item) in zip(st.columns(per_row), queue.iloc[start:start + per_row].iterrows()):
            with col.container(border=True):
                data = thumb(item["path"], 200)
                if data is not None:
                    st.image(data, width="stretch", caption=f"check this label: {Path(item['path']).name}")
                st.markdown(f"filed **{md(item['label'])}**, looks like **{md(item['suggested'])}** "
                            f"({item['p_suggested']:.0%})")
                key = f"suspect_{run.id}_{i}"
                st.session_state.setdefault(f"{key}_class", item["suggested"])
                fix_controls(dataset_root, Path(item["path"]), classes, key=key)
