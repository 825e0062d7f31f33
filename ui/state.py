"""Session state: the user's choices, kept in plain non-widget keys so they survive moving between pages.

Widget values are dropped when their page is left, so each page copies what it needs from these keys into
its widgets' defaults and writes changes back.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.augment import AugmentConfig
from core.backbones import DEFAULT_BACKBONE
from core.workspace import DEMO_DATASET

DEFAULTS = {
    "dataset": str(DEMO_DATASET),       # the dataset every page works on
    "backbone": DEFAULT_BACKBONE,
    "augment": AugmentConfig().to_dict(),  # what the preview shows is what training uses
    "val_split": 0.2,
    "test_split": 0.0,
    "seed": 0,
    "run_id": None,                      # the run the Predictions page shows
}


def init_state() -> None:
    for key, value in DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = value.copy() if isinstance(value, dict) else value


def dataset_path() -> Path:
    init_state()
    return Path(st.session_state["dataset"])


def set_dataset(path: str | Path) -> None:
    st.session_state["dataset"] = str(path)


def augment_config() -> AugmentConfig:
    init_state()
    return AugmentConfig.from_dict(st.session_state["augment"])

