"""Session state: the user's choices, kept in plain non-widget keys so they survive moving between pages.

Widget values are dropped when their page is left, so each page copies what it needs from these keys into
its widgets' defaults and writes changes back.

The dataset and the run being looked at also live in the URL (`?dataset=…&run=…`) and in the workspace
(core.preferences): a reload, a bookmark or a second tab shows the same thing. A new session takes them from the
URL first, then from the workspace's last choice, then the defaults.

So do the Training page's main choices (mode, backbone, epochs), which the URL carries only when they differ from
the defaults (`&mode=scratch&epochs=60`): a URL the app wrote is complete, so a choice it leaves out is the default
(not the workspace's last one, which another tab may have changed). A URL without any of the app's parameters (a
new tab) takes them from the workspace.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from core import preferences
from core.augment import AugmentConfig, default_augment
from core.backbones import DEFAULT_BACKBONE, list_backbones
from core.config import MODES, TrainConfig
from core.datasets import DatasetError
from core.datasets.importing import dataset_name
from core.workspace import DEMO_DATASET, datasets_dir

DEFAULTS = {
    "dataset": str(DEMO_DATASET),       # the dataset every page works on
    "backbone": DEFAULT_BACKBONE,
    "augment": default_augment().to_dict(),  # what the preview shows is what training uses
    "val_split": 0.2,
    "test_split": 0.0,
    "seed": 0,
    "run_id": None,                      # the run the Predictions page shows
    "mode": TrainConfig.mode,            # the Training page's main choices (backbone above)
    "epochs": TrainConfig.epochs,
}
# The built-in demo in the URL. A workspace dataset's name never starts with "*" (core.datasets.names.safe_name
# replaces it), so this cannot clash with a dataset the user called "demo" (an editable copy is often named so).
DEMO_PARAM = "*demo"
DATASET_PARAM, RUN_PARAM = "dataset", "run"
TRAINING_CHOICES = ("mode", "backbone", "epochs")  # session keys, named so in the URL and the workspace too
MAX_EPOCHS = 500  # the Training page's Epochs field goes up to this
_RESTORED = "_state_restored"


def dataset_to_param(path: str | Path) -> str | None:
    path = Path(path)
    if path.resolve() == DEMO_DATASET.resolve():
        return DEMO_PARAM
    if path.resolve().parent == datasets_dir().resolve():
        return path.name
    return None


def dataset_from_param(value: str | None) -> Path | None:
    """The dataset a URL (or the workspace's memory) names, or None when it names none that exists."""
    if not value:
        return None
    if value == DEMO_PARAM:
        return DEMO_DATASET
    try:
        if dataset_name(value) != value:  # a path, `..` or other trick: only plain dataset names
            return None
    except DatasetError:
        return None
    path = datasets_dir() / value
    return path if path.is_dir() else None


def training_choice(key: str, value: object):
    """A training choice read from the URL or the workspace, checked (None when it is not one the page offers)."""
    if key == "mode":
        return value if value in MODES else None
    if key == "backbone":
        return value if value in {spec.name for spec in list_backbones()} else None
    if key == "epochs":
        try:
            epochs = int(str(value))
        except ValueError:
            return None
        return epochs if 1 <= epochs <= MAX_EPOCHS else None
    raise KeyError(key)


def _restore(missing: set[str]) -> None:
    """Once per session, for the keys nothing set yet: the URL's choices, else the workspace's last ones."""
    remembered = preferences.last_choices()
    params = st.query_params
    # A URL the app wrote leaves out the training choices that are at their defaults.
    from_url = any(key in params for key in (DATASET_PARAM, RUN_PARAM, *TRAINING_CHOICES))
    for key in TRAINING_CHOICES:
        value = training_choice(key, params.get(key) if from_url else remembered.get(key))
        if value is not None and key in missing:
            st.session_state[key] = value
    dataset = dataset_from_param(params.get(DATASET_PARAM)) or (
        Path(remembered["dataset"]) if remembered.get("dataset") and Path(remembered["dataset"]).is_dir() else None)
    if dataset is not None and "dataset" in missing:
        st.session_state["dataset"] = str(dataset)
    run_id = params.get(RUN_PARAM) or remembered.get("run_id")
    if run_id and "run_id" in missing:
        st.session_state["run_id"] = run_id


def init_state() -> None:
    missing = {key for key in DEFAULTS if key not in st.session_state}
    for key in missing:
        value = DEFAULTS[key]
        st.session_state[key] = value.copy() if isinstance(value, dict) else value
    if not st.session_state.get(_RESTORED):
        st.session_state[_RESTORED] = True
        _restore(missing)


def publish_state() -> None:
    """Write the session's dataset, run and training choices into the URL and the workspace (app.py, on every
    run: moving to another page clears the URL's query parameters, and a widget may have changed the session's
    keys)."""
    init_state()
    dataset_param = dataset_to_param(st.session_state["dataset"])
    run_id = st.session_state.get("run_id")
    choices = {key: str(st.session_state[key]) for key in TRAINING_CHOICES}
    wanted = {DATASET_PARAM: dataset_param, RUN_PARAM: run_id,
              **{key: value if value != str(DEFAULTS[key]) else None for key, value in choices.items()}}
    for key, value in wanted.items():
        if value and st.query_params.get(key) != value:
            st.query_params[key] = value
        elif not value and key in st.query_params:
            del st.query_params[key]
    preferences.remember(dataset=st.session_state["dataset"] if dataset_param else None, run_id=run_id, **choices)


def dataset_path() -> Path:
    init_state()
    return Path(st.session_state["dataset"])


def set_dataset(path: str | Path) -> None:
    st.session_state["dataset"] = str(path)
    publish_state()


def set_run(run_id: str | None) -> None:
    """The run the Predictions page (and the URL) shows."""
    init_state()
    st.session_state["run_id"] = run_id
    publish_state()


def keep_choice(key: str, widget_key: str) -> None:
    """on_change of a widget that shows a session choice: copy its value into the choice. Callbacks run before
    the script, so app.py publishes the new value and the sidebar shows it in the same rerun."""
    st.session_state[key] = st.session_state[widget_key]


def set_choices(**choices) -> None:
    """Training choices as the page's widgets show them; the URL and the workspace follow (here too, not only
    in app.py: a page script run on its own, as AppTest's switch_page does, must publish them as well)."""
    init_state()
    st.session_state.update(choices)
    publish_state()


def augment_config() -> AugmentConfig:
    init_state()
    return AugmentConfig.from_dict(st.session_state["augment"])
