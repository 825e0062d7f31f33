"""The engine as the pages show it: which executor runs trainings, where each active run is, how many wait."""
from __future__ import annotations

import streamlit as st

from core.engine.executors import ExecutorView, get_executor
from core.errors import FewShotError
from ui.common import md


def engine_summary(view: ExecutorView) -> str:
    where = "on this machine" if view.where == "this machine" else f"on the Ray cluster at {view.where}"
    capacity = f"{view.capacity} at a time" if view.capacity else "capacity not known yet"
    return (f"**Engine:** {view.kind} {md(where)} · {capacity} · {len(view.running)} running · "
            f"{view.waiting} waiting")


def engine_panel() -> None:
    """Files only (the queue folder, the runs' status, the dispatcher's ray.json): no Ray connection from a page."""
    try:
        view = get_executor().describe()
    except (FewShotError, OSError) as exc:
        st.error(str(exc))
        return
    if view.kind != "ray" and not view.placements:
        return  # the default engine with nothing to do: nothing worth a line
    with st.container(border=True, key="engine_panel"):
        st.markdown(engine_summary(view))
        if view.note:
            st.caption(md(view.note))
        lines = [f"- `{md(p.run_id)}` {md(p.name)} — " + (f"running on {md(p.node)}" if p.state == "running" and
                                                          p.node else "waiting for a worker")
                 for p in view.placements]
        if lines:
            st.markdown("\n".join(lines))
