"""Training: choose how to learn, start a run in its own process, watch it live, stop it."""
from __future__ import annotations

import time

import streamlit as st

from core.backbones import get_backbone, list_backbones
from core.charts import history_figure
from core.config import MODE_HELP, MODES, ConfigError, TrainConfig
from core.engine import submit
from core.errors import FewShotError
from core.run_summary import saved_model_note
from core.runs import (
    ACTIVE_STATES,
    Run,
    RunError,
    RunStatus,
    active_runs,
    create_run,
    get_run,
    list_runs,
    run_dataset_title,
    run_title,
)
from ui.common import current_dataset, dataset_label, md, poll_seconds, warn_if_disk_full
from ui.frame import require_frame
from ui.prediction_views import model_file_ready
from ui.state import MAX_EPOCHS, augment_config, dataset_path, init_state, keep_choice, set_choices, set_run
from ui.try_it import try_it

require_frame(__file__)

init_state()
st.title("Training")
warn_if_disk_full()
st.caption("Your photos stay on this machine. Training runs in the background: you can change pages, reload or "
           "close the tab — it keeps going, and this page finds it again.")

dataset = current_dataset()
counts = dataset.counts()


def settings_form() -> None:
    """The training settings, with their defaults, and Start."""
    defaults = TrainConfig()
    left, right = st.columns([3, 2])
    with left:
        # The mode, backbone and epochs are session choices (ui.state): a reload, a bookmark or another page
        # and back keeps them. Each widget starts from its choice and copies a change back.
        chosen = st.session_state["mode"]
        mode = st.radio("How should it learn?", MODES, index=MODES.index(chosen) if chosen in MODES else 1,
                        key="train_mode",
                        on_change=keep_choice, args=("mode", "train_mode"),
                        format_func=lambda m: {"scratch": "From scratch (baseline)",
                                               "bottleneck": "Pretrained features (fast, recommended)",
                                               "finetune": "Pretrained + fine-tune (slower, best)"}[m],
                        captions=[MODE_HELP[m] for m in MODES])
        specs = list_backbones()
        names = [s.name for s in specs]
        backbone = st.selectbox("Pretrained network", names, index=names.index(st.session_state["backbone"])
                                if st.session_state["backbone"] in names else 0, key="train_backbone",
                                on_change=keep_choice, args=("backbone", "train_backbone"),
                                format_func=lambda n: get_backbone(n).title, disabled=mode == "scratch",
                                help="The network that was trained on a million ImageNet photos and turns each "
                                     "of your photos into a description (its 'bottleneck features').")
        st.caption(get_backbone(backbone).description)
    with right:
        st.markdown(f"**Dataset:** {md(dataset_label(dataset.root))} — {len(dataset.classes)} classes, "
                    f"{int(counts['train'].sum())} training and {int(counts.get('val', counts['train'] * 0).sum())} "
                    f"validation images")
        augment = augment_config()
        st.markdown("**Augmentation:** " + ("off" if augment.is_identity() else "as set on the Augmentation page")
                    + (" (used by scratch and fine-tune)" if mode != "bottleneck" else " (not used by this mode "
                       "unless augmented copies are cached below)"))
        if st.session_state.pop("_train_name_used", False):  # a started run took the name: a new run, a new one
            st.session_state["train_name"] = ""
        st.text_input("Name (optional)", key="train_name",
                      placeholder=f"left empty: {mode} · {dataset.root.name} · {time.strftime('%H:%M')}",
                      help="A name to find this run by on the Predictions and Runs pages. Left empty, the run is "
                           "called after its mode, dataset and start time.")

    with st.expander("Settings (the defaults are a good start)"):
        c1, c2, c3 = st.columns(3)
        epochs = c1.number_input("Epochs", 1, MAX_EPOCHS, st.session_state["epochs"], key="train_epochs",
                                 on_change=keep_choice, args=("epochs", "train_epochs"),
                                 help="Passes over the training images. Training stops early when validation "
                                      "stops improving, keeping the best epoch.")
        c1.select_slider("Batch size", [4, 8, 16, 32, 64], defaults.batch_size, key="train_batch",
                         help="Images per learning step.")
        c2.select_slider("Learning rate", [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], defaults.lr, key="train_lr",
                         format_func=lambda v: f"{v:g}", help="Step size of learning (Adam).")
        c2.slider("Dropout", 0.0, 0.8, defaults.dropout, 0.05, key="train_dropout",
                  help="Randomly silences this fraction of the classifier during training, against memorising "
                       "the few photos.")
        c3.select_slider("Classifier size", [64, 128, 256, 512], defaults.dense_units, key="train_units",
                         help="Neurons in the small classifier on top.")
        c3.number_input("Patience", 1, 100, defaults.patience, key="train_patience",
                        help="Epochs without improvement before stopping early.")
        c3.checkbox("Balance classes", True, key="train_balanced",
                    help="Give small classes as much weight as large ones.")
        # Start reads what these widgets hold from their session state, in its callback (config_from_widgets).
        if mode == "finetune":
            c1.number_input("Fine-tuning epochs", 1, 200, defaults.finetune_epochs, key="train_ft_epochs")
            c2.select_slider("Fine-tuning learning rate", [1e-5, 3e-5, 1e-4, 3e-4, 1e-3], defaults.finetune_lr,
                             key="train_ft_lr", format_func=lambda v: f"{v:g}",
                             help="The peak step (SGD, momentum 0.9, after a short warm-up, then decaying to 0). "
                                  "The recipe's 1e-4 barely moves the network; much bigger steps wreck what it "
                                  "learned from ImageNet.")
            c3.checkbox("Fine-tune on full images (slower)", defaults.finetune_full, key="train_ft_full",
                        help="Off: the network's frozen lower part runs once per photo and a few augmented copies "
                             "(cached for later runs), and only its last block trains on that. On: every photo goes "
                             "through the whole network in every epoch, freshly augmented.")
        if mode == "bottleneck":
            c2.number_input("Augmented copies", 0, 20, 0, key="train_copies",
                            help="Also cache the features of this many augmented versions of each training photo: "
                                 "augmentation without losing the speed of caching.")

    set_choices(mode=mode, backbone=backbone, epochs=int(epochs))  # whatever the widgets show is the choice
    # The run is created and queued in Start's callback, which Streamlit runs before the page script: the run
    # folder (the click's time) exists as soon as the click reaches the server, and the worker starts while the
    # page is still being drawn, with the new run already on top (no second script run).
    st.button("Start training", type="primary", icon=":material/play_arrow:", key="train_start", on_click=start)
    if problem := st.session_state.pop("_train_start_error", None):
        st.error(problem)
    return None


def config_from_widgets() -> TrainConfig:
    """The config the settings widgets show (their session state: read in Start's callback). Raises ConfigError."""
    get, defaults = st.session_state.get, TrainConfig()
    mode = get("train_mode", st.session_state["mode"])
    finetune = mode == "finetune"
    return TrainConfig(
        data=str(dataset_path()), val_split=st.session_state["val_split"],
        test_split=st.session_state["test_split"], seed=st.session_state["seed"], mode=mode,
        backbone=get("train_backbone", st.session_state["backbone"]),
        dense_units=get("train_units", defaults.dense_units),
        dropout=get("train_dropout", defaults.dropout), epochs=int(get("train_epochs", st.session_state["epochs"])),
        batch_size=get("train_batch", defaults.batch_size), lr=get("train_lr", defaults.lr),
        finetune_epochs=int(get("train_ft_epochs", defaults.finetune_epochs) if finetune else defaults.finetune_epochs),
        finetune_lr=get("train_ft_lr", defaults.finetune_lr) if finetune else defaults.finetune_lr,
        finetune_full=bool(get("train_ft_full", defaults.finetune_full) if finetune else defaults.finetune_full),
        class_weights="balanced" if get("train_balanced", True) else "none",
        patience=int(get("train_patience", defaults.patience)),
        augment_copies=int(get("train_copies", 0) if mode == "bottleneck" else 0), augment=augment_config())


def start() -> None:
    """Start's on_click: create the run folder and queue it; a problem is said under the button."""
    try:
        config = config_from_widgets()
    except ConfigError as exc:
        st.session_state["_train_start_error"] = f"Check the settings: {exc}"
        return
    try:
        run = submit(create_run(config, name=st.session_state.get("train_name", "")))
    except (FewShotError, OSError) as exc:
        st.session_state["_train_start_error"] = f"The training could not start: {exc}"
        return
    st.session_state["watch_run"] = run.id
    st.session_state["_train_name_used"] = True
    set_run(run.id)


def watched_run() -> Run | None:
    """The run to show: one this session started, else any running one, else the newest."""
    run_id = st.session_state.get("watch_run")
    if run_id:
        try:
            return get_run(run_id)
        except RunError:
            st.session_state.pop("watch_run")
    running = active_runs()
    if running:
        st.session_state["watch_run"] = running[0].id  # watched from here on: its results stay on top when done
        return running[0]
    runs = list_runs()
    return runs[0] if runs else None


def _eta(status: RunStatus) -> str:
    progress = float(status.progress or 0.0)
    started = status.phase_started_at
    if not started or progress <= 0.02 or progress >= 1:
        return ""
    elapsed = time.time() - started
    # The first moments of a phase (loading, the first batch) say little about the rest: a first guess of
    # "387 s left" for a phase that took 75 s. Estimate only once a tenth is done and a few seconds have passed.
    if progress < 0.1 or elapsed < 3:
        return ""
    remaining = elapsed * (1 - progress) / progress
    return f" · about {remaining:.0f} s left in this phase"


# The run's panel is polled as often as ui.common.poll_seconds says; the charts (history.csv, two figures) once a
# second; a finished run is drawn once.
CHART_POLL_SECONDS = 1.0

HEADERS = {"queued": ":material/hourglass_top: Waiting", "running": ":material/directions_run: Training",
           "done": ":green[:material/check_circle:] Finished", "failed": ":red[:material/error:] Failed",
           "stopped": ":material/stop_circle: Stopped"}


def run_panel(run: Run, status: RunStatus) -> None:
    """The run's header and its state: progress and Stop while active, the error, or the results."""
    state = status.state
    from_click = status.seconds_from_click(time.time()) or 0.0
    st.subheader(f"{HEADERS.get(state, state)}: {md(run_title(run))}")  # "Finished" first: shared/tools/loop_latency.py
    st.caption(f"On {md(run_dataset_title(run))} · run `{run.id}`")
    if state in ACTIVE_STATES:
        st.progress(float(status.progress or 0.0),
                    text=f"{status.message or status.phase} · {from_click:.0f} s since you clicked Start"
                         f"{_eta(status)}")
        if status.executor == "ray":  # on a cluster: say where (or that it waits for a worker)
            st.caption(f"On the Ray cluster: running on {status.node}" if state == "running" and status.node
                       else "On the Ray cluster: waiting for a free worker (the Runs page shows the queue)")
        if st.button("Stop", icon=":material/stop:", key=f"stop_{run.id}",
                     help="Stops within a moment; the best model so far is kept if an epoch has finished."):
            run.request_stop()
            st.toast("Stopping…")
    elif state == "failed":
        st.error(status.error or "The training failed.")
        with st.expander("Technical log"):
            st.code(run.log_tail(tracebacks=False), language=None)
    else:
        metrics = run.metrics() or {}
        c1, c2, c3, c4 = st.columns(4)
        if metrics.get("val_accuracy") is not None:
            c1.metric("Validation accuracy", f"{metrics['val_accuracy']:.1%}",
                      help=f"Measured on {metrics.get('n_val', '?')} validation photos.")
        if metrics.get("test_accuracy") is not None:
            c2.metric("Test accuracy", f"{metrics['test_accuracy']:.1%}",
                      help=f"Measured on {metrics.get('n_test', '?')} test photos.")
        c3.metric("Time", f"{from_click:.1f} s", help="From your click on Start to the results on disk.")
        if metrics.get("n_extracted") is not None:
            c4.metric("Images through the network", metrics["n_extracted"],
                      help="Images whose features had to be computed; the rest came from the cache.")
        if note := saved_model_note(metrics):
            st.caption(note)
        parts = status.breakdown(metrics.get("phase_seconds"))
        if parts:
            st.caption("Where the time went: " + " · ".join(f"{name} {sec:.1f} s" for name, sec in parts.items()))
        if state == "stopped":
            st.info(status.message or "Stopped.")
        if run.has_results():
            st.page_link("pages/5_predictions.py", label="See what the model got right and wrong",
                         icon=":material/grid_view:")


def charts(run: Run, active: bool) -> None:
    history = run.history()
    if not history.empty:
        left, right = st.columns(2)
        left.plotly_chart(history_figure(history, "loss"), key=f"loss_{run.id}")
        right.plotly_chart(history_figure(history, "accuracy"), key=f"acc_{run.id}")
    elif active:
        st.caption("The charts appear when the first epoch ends.")


def live_panel(run: Run) -> None:
    """Polled while the run is active; only this fragment redraws (the page around it stays). The poll that finds
    the run ended draws its results right here, then the whole page once (charts, Try it, the open settings),
    which stops the polling."""
    status = run.status()
    run_panel(run, status)
    if not status.active:
        st.rerun(scope="app")


def live_charts(run: Run) -> None:
    charts(run, active=True)


def show_run(run: Run) -> None:
    status = run.status()
    if status.active:
        st.fragment(live_panel, run_every=poll_seconds(run))(run)
        st.fragment(live_charts, run_every=CHART_POLL_SECONDS)(run)
        return
    run_panel(run, status)
    charts(run, active=False)
    if run.has_results():
        try_now(run)


def try_now(run: Run) -> None:
    """Right where the run finished: a new photo (dropped or from the camera), its class bars and heatmap."""
    st.markdown("**Try it now** — a photo the model has never seen, dropped here or from the camera. Nothing is "
                "added to your dataset.")
    if model_file_ready(run, key=f"train_try_model_{run.id}"):
        try_it(run, run.labels(), key="train_try")


# A training in progress comes first (someone demoing wants the curves on screen), and stays first when it ends
# (its results must not jump below the form); otherwise the settings do.
run = watched_run()
on_top = run is not None and (run.status().state in ACTIVE_STATES or st.session_state.get("watch_run") == run.id)
if on_top:
    show_run(run)
    st.divider()
    running_now = run.status().state in ACTIVE_STATES
    # Folded while a run trains (its curves are what matters); open once it ended, so the next Start is one click.
    with st.expander("Start another training" + (" (it waits until this one ends)" if running_now else ""),
                     expanded=not running_now):
        settings_form()
else:
    settings_form()
if run is not None and not on_top:
    st.divider()
    show_run(run)
