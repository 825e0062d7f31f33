"""Runs: every training in one table; compare their curves; open, inspect or delete one."""
from __future__ import annotations

import streamlit as st

from core.charts import overlay_figure
from core.errors import FewShotError
from core.retraining import compare_on_same_photos
from core.runs import ACTIVE_STATES, RunError, delete_run, get_run, retrained_from, runs_table
from ui.common import md, warn_if_disk_full
from ui.engine_views import engine_panel
from ui.frame import require_frame
from ui.state import init_state, set_run

require_frame(__file__)
init_state()
st.title("Runs")
warn_if_disk_full()
st.caption("Every training you started, newest first. Tick runs in the table to compare their learning curves, "
           "for example training from scratch against pretrained features on the same photos.")

TABLE_KEY = "runs_table"

flash = st.session_state.pop("runs_flash", None)
if flash:
    getattr(st, flash[0])(flash[1])

engine_panel()
table = runs_table()
if table.empty:
    st.info("No runs yet. Start a training and it will be listed here.")
    st.page_link("pages/4_training.py", label="Go to Training", icon=":material/model_training:")
    st.stop()


def retrain_comparison(table) -> None:
    """Before/after for the newest retrain ("Retrain with my fixes" names its run after its source)."""
    sources = table["name"].fillna("").map(retrained_from)
    retrains = table[sources.notna() & (table["status"] == "done")]
    if retrains.empty:
        return
    after = retrains.iloc[0]
    source_id = sources[retrains.index[0]]
    before_rows = table[table["run"] == source_id]
    if before_rows.empty:
        return
    before = before_rows.iloc[0]
    with st.container(border=True):
        titles = dict(zip(table["run"], table["title"], strict=True))
        st.markdown(f"**Your last fix-and-retrain:** {md(titles.get(source_id, source_id))} → "
                    f"{md(after['title'])}")
        c1, c2, c3 = st.columns(3)
        try:
            same = compare_on_same_photos(get_run(source_id), get_run(after["run"]))
        except (RunError, OSError):
            same = None
        if same is not None:
            c1.metric(f"Validation accuracy ({same.n_photos} photos)", f"{same.after_accuracy:.1%}",
                      delta=f"{(same.after_accuracy - same.before_accuracy) * 100:+.1f} points",
                      help=f"Before → after on the same {same.n_photos} validation photos (those in both runs), "
                           f"each judged by its corrected label ({same.n_relabelled} relabelled). "
                           f"{same.n_only_after} photo(s) only the new run validated on, {same.n_only_before} only "
                           f"the old one.")
        elif after["val_accuracy"] is not None and before["val_accuracy"] is not None:
            c1.metric("Validation accuracy", f"{after['val_accuracy']:.1%}",
                      delta=f"{(after['val_accuracy'] - before['val_accuracy']) * 100:+.1f} points",
                      help="Before → after on each run's own validation photos: the two runs share none.")
        metrics = get_run(after["run"]).metrics() or {}
        c2.metric("Photos processed anew", metrics.get("n_extracted", "—"),
                  help="Photos whose features were not in the cache (new or changed content).")
        if after["seconds"] is not None:
            c3.metric("Retrain time", f"{after['seconds']:.0f} s")


def keep_ticked_runs(run_ids: list[str]) -> None:
    """The table's selection is by row position; a new run (a retrain, a training started in another tab) shifts
    every row down. Tick the same runs again at their new positions, so nobody compares or deletes the wrong one."""
    previous = st.session_state.get("runs_table_ids")
    st.session_state["runs_table_ids"] = run_ids
    state = st.session_state.get(TABLE_KEY)
    if previous is None or previous == run_ids or not state:
        return
    ticked = [previous[i] for i in state["selection"]["rows"] if 0 <= i < len(previous)]
    st.session_state[TABLE_KEY] = {"selection": {"rows": [run_ids.index(r) for r in ticked if r in run_ids],
                                                 "columns": []}}


retrain_comparison(table)
table["mode"] = table["mode"].fillna("?")
keep_ticked_runs(table["run"].tolist())
event = st.dataframe(
    table, key=TABLE_KEY, on_select="rerun", selection_mode="multi-row", hide_index=True,
    # What tells runs apart first (a narrow window shows the first columns); the folder id last.
    column_order=["title", "dataset", "val_accuracy", "n_val", "mode", "status", "date", "seconds", "test_accuracy",
                  "backbone", "run"] + (["damaged"] if table["damaged"].any() else []),
    column_config={
        "title": st.column_config.TextColumn("name", pinned=True,
                                             help="The name given at Start, else mode · dataset · time."),
        "dataset": st.column_config.TextColumn("dataset", help="The dataset the run trained on."),
        "run": st.column_config.TextColumn("run id", help="The run's folder name (date, time, mode)."),
        "mode": st.column_config.TextColumn("mode", help="scratch: a small network learns alone; bottleneck: "
                                                         "pretrained features + small classifier; finetune: "
                                                         "then also adjusts the top of the pretrained network."),
        "val_accuracy": st.column_config.ProgressColumn(
            "validation accuracy", format="percent", min_value=0.0, max_value=1.0,
            help="Share of the validation photos the model got right (how many: the next column)."),
        "n_val": st.column_config.NumberColumn("of photos", format="%d",
                                               help="How many validation photos that accuracy is measured on."),
        "test_accuracy": st.column_config.ProgressColumn(
            "test accuracy", format="percent", min_value=0.0, max_value=1.0,
            help="The same on the test photos (only when a test split was kept aside)."),
        "seconds": st.column_config.NumberColumn("duration", format="%.0f s", help="Wall-clock time of the run."),
        "status": st.column_config.TextColumn("status"),
        "damaged": st.column_config.TextColumn("damaged files", help="Files of the run that cannot be read "
                                               "(truncated, overwritten): what is readable is shown; delete it."),
    })
selected_rows = [i for i in event.selection.rows if 0 <= i < len(table)]
selected = table.iloc[selected_rows]

if selected.empty:
    st.caption("☝️ Tick one or more runs (the boxes at the left of the table) to compare and manage them.")
    st.stop()


def label(row) -> str:
    return f"{row['title']} ({row['mode']}, on {row['dataset']})"


# ------------------------------------------------------------------------------------------- curves
labels = [label(row) for _, row in selected.iterrows()]
# Two runs may carry the same name: the chart's legend (keyed by label) must keep both.
labels = [f"{text} · {run_id}" if labels.count(text) > 1 else text for text, run_id in zip(labels, selected["run"],
                                                                                          strict=True)]
histories = {text: get_run(run_id).history() for text, run_id in zip(labels, selected["run"], strict=True)}
st.subheader("Learning curves")
st.caption("Validation curves show how well each model does on photos it does not learn from; when the training "
           "curve keeps rising but the validation curve does not, the model is memorising its photos.")
tab_acc, tab_loss, tab_train = st.tabs(["Validation accuracy", "Validation loss", "Training accuracy"])
for tab, metric, title, key in ((tab_acc, "val_accuracy", "Validation accuracy (higher is better)", "acc"),
                                (tab_loss, "val_loss", "Validation loss (lower is better)", "loss"),
                                (tab_train, "accuracy", "Training accuracy", "train")):
    fig = overlay_figure(histories, metric)
    fig.update_layout(title=title)
    if "accuracy" in metric:
        fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    tab.plotly_chart(fig, key=f"runs_overlay_{key}")
if all(h.empty for h in histories.values()):
    st.caption("The selected runs have no recorded epochs yet.")


# ------------------------------------------------------------------------------------------- per run
def ask_delete(run_id: str) -> None:
    st.session_state["runs_confirm_delete"] = run_id


def do_delete(run_id: str) -> None:
    st.session_state.pop("runs_confirm_delete", None)
    try:
        delete_run(get_run(run_id))
    except (FewShotError, OSError) as exc:
        st.session_state["runs_flash"] = ("error", f"Not deleted: {md(exc)}")
        return
    st.session_state["runs_flash"] = ("success", f"Run {md(run_id)} deleted.")
    st.session_state[TABLE_KEY] = {"selection": {"rows": [], "columns": []}}  # row numbers shift after a delete


st.subheader("Selected runs")
for _, row in selected.iterrows():
    run_id = row["run"]
    try:
        run = get_run(run_id)
    except RunError as exc:  # deleted in another tab since the table was read
        st.warning(md(exc))
        continue
    with st.container(border=True):
        st.markdown(f"**{md(label(row))}** · {md(run_id)} · {row['status']}")
        c1, c2, c3 = st.columns(3)
        if c1.button("Show predictions", key=f"runs_show_{run_id}", icon=":material/grid_view:",
                     disabled=not run.has_results(),
                     help="Open its confusion matrix and photos." if run.has_results() else
                     "This run has no results."):
            set_run(run_id)
            st.session_state.pop("pred_run", None)
            st.switch_page("pages/5_predictions.py")
        if row["status"] in ACTIVE_STATES:
            c2.page_link("pages/4_training.py", label="Watch it train", icon=":material/monitoring:")
        c3.button("Delete…", key=f"runs_delete_{run_id}", icon=":material/delete:", on_click=ask_delete,
                  args=(run_id,), help="Removes the run's folder: its model, curves and predictions.")
        if st.session_state.get("runs_confirm_delete") == run_id:
            st.warning(f"Delete run {md(run_id)} and its model for good? This cannot be undone.")
            y, n = st.columns(2)
            y.button("Yes, delete it", key=f"runs_delete_yes_{run_id}", type="primary", on_click=do_delete,
                     args=(run_id,))
            n.button("Cancel", key=f"runs_delete_no_{run_id}", on_click=ask_delete, args=(None,))
        damaged = run.damaged()
        if damaged:
            st.warning(f"Damaged: {md(', '.join(damaged))} cannot be read. What is readable is shown; you can "
                       f"delete the run.")
        status = run.status()
        if status.error:
            st.error(f"This run failed: {md(status.error)}")
        with st.expander("Settings (config.json)"):
            st.caption("Everything needed to repeat this run: the settings and the library versions.")
            st.json(run.config_dict(), expanded=2)
            st.code(run.config_dict().get("command", ""), language="bash")
