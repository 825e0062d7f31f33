"""The workspace's last choices (dataset, run, the Training page's mode, backbone and epochs), so a new tab or a
fresh session opens where the user left off.

A URL's query parameters win over these (a bookmark shows what was bookmarked); these win over the defaults.
"""
from __future__ import annotations

from core import fsutil
from core.workspace import workspace_root

PREFERENCES_FILE = "preferences.json"
KEYS = ("dataset", "run_id", "mode", "backbone", "epochs")  # all stored as strings


def last_choices() -> dict[str, str]:
    """What the workspace remembers; {} when nothing (or an unreadable file: only a convenience is lost)."""
    data = fsutil.read_json(workspace_root() / PREFERENCES_FILE, {})
    if not isinstance(data, dict):
        return {}
    return {key: value for key, value in data.items() if key in KEYS and isinstance(value, str) and value}


def remember(**choices: str | None) -> None:
    """Store the given choices (None forgets one). A full or read-only disk only loses the convenience."""
    current = last_choices()
    merged = {**current, **{k: v for k, v in choices.items() if k in KEYS}}
    merged = {k: v for k, v in merged.items() if v}
    if merged == current:
        return
    try:
        fsutil.atomic_write_json(workspace_root() / PREFERENCES_FILE, merged)
    except OSError:
        pass
