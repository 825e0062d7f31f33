"""Presenter: the recipe's story in one click, and "how many photos do I need?", in large type for a projector.
Nothing to configure: the dataset, split and backbone are the session's (the sidebar shows them)."""
from __future__ import annotations

import time

import streamlit as st

from core.charts import curve_figure, story_figure
from core.config import TrainConfig
from core.curve import PAYING_POINTS, CurveSettings, dataset_curve, enough_shots
from core.errors import FewShotError
from core.story import STAGE_LINES, STAGE_TITLES, Story, changed_photos, get_story, list_stories, start_story, summary
from ui.common import current_dataset, dataset_label, folder_fingerprint, md, thumb
from ui.frame import require_frame
from ui.state import augment_config, dataset_path, init_state

require_frame(__file__)
init_state()

# Projector type: this page's style only (the element goes with the page).
st.markdown("""<style>
.stMainBlockContainer p, .stMainBlockContainer li { font-size: 1.3rem; }
.stMainBlockContainer [data-testid="stMetricValue"],
.stMainBlockContainer [data-testid="stMetricValue"] * { font-size: 3.4rem; font-weight: 700; line-height: 1.2; }
.stMainBlockContainer [data-testid="stMetricLabel"] p { font-size: 1.4rem; }
.stMainBlockContainer [data-testid="stMetricDelta"] * { font-size: 1.3rem; }
.stMainBlockContainer h1 { font-size: 3rem; }
.stMainBlockContainer button p { font-size: 1.3rem; }
</style>""", unsafe_allow_html=True)

st.title("Presenter")
dataset = current_dataset()
counts = dataset.counts()
n_train, n_val = int(counts["train"].sum()), int(counts["val"].sum()) if "val" in counts else 0
st.markdown(f"**{md(dataset_label(dataset.root))}**: {len(dataset.classes)} classes, {n_train} training photos, "
            f"{n_val} validation photos.")

STORY_KEY = "presenter_story"
tab_story, tab_curve = st.tabs(["The recipe, in one click", "How many photos do I need?"])


# ------------------------------------------------------------------------------------------- the story
def base_config() -> TrainConfig:
    return TrainConfig(data=str(dataset_path()), val_split=st.session_state["val_split"],
                       test_split=st.session_state["test_split"], seed=st.session_state["seed"],
                       backbone=st.session_state["backbone"], augment=augment_config())


def shown_story() -> Story | None:
    """The story this session started, else the newest one (a reload or another tab finds it again)."""
    story_id = st.session_state.get(STORY_KEY)
    story = get_story(story_id) if story_id else None
    if story is None:
        stories = list_stories()
        story = stories[0] if stories else None
    return story


def stage_card(column, row: dict) -> None:
    with column.container(border=True):
        st.markdown(f"### {row['title']}")
        seconds = row["seconds"]
        if row["state"] == "done" and row["val_accuracy"] is not None:
            delta = None if row["gain"] is None else f"{row['gain'] * 100:+.0f} points"
            st.metric("right on validation", f"{row['val_accuracy']:.0%}", delta=delta)
            st.markdown(f"in **{seconds:.0f} s**" if seconds is not None else "")
        elif row["state"] == "running":
            st.metric("right on validation", "…")
            st.progress(row["progress"], text=f"{row['message']} · {seconds or 0:.0f} s")
        elif row["state"] == "queued":
            st.metric("right on validation", "—")
            st.caption("waits for the stage before")
        else:
            st.metric("right on validation", "—")
            st.error(md(row["error"] or row["state"]))


def what_each_adds(rows: list[dict]) -> None:
    lines = []
    for row in rows:
        line = f"**{row['title']}**: {STAGE_LINES[row['stage']]}"
        if row["val_accuracy"] is not None and row["seconds"] is not None:
            line += f" — **{row['val_accuracy']:.0%}** in {row['seconds']:.0f} s"
            if row["gain"] is not None:
                line += f", **{row['gain'] * 100:+.0f} points**"
        lines.append(f"- {line}")
    st.markdown("\n".join(lines))


def fixed_photos(story: Story) -> None:
    stages = story.ordered()
    for (before_stage, before), (after_stage, after) in zip(stages, stages[1:]):
        if not (before.has_results() and after.has_results()):
            continue
        change = changed_photos(before, after)
        fixed, broken = change["fixed"], change["broken"]
        title = f"{STAGE_TITLES[before_stage]} got wrong, {STAGE_TITLES[after_stage].lower()} gets right"
        st.markdown(f"#### {len(fixed)} photo{'s' if len(fixed) != 1 else ''} {title.lower()}"
                    + (f" ({len(broken)} the other way)" if len(broken) else ""))
        if fixed.empty:
            continue
        columns = st.columns(6)
        for i, row in enumerate(fixed.head(6).itertuples()):
            image = thumb(row.path, 200)
            if image is not None:
                columns[i].image(image)
            columns[i].caption(f"{md(row.label)} — was *{md(row.before)}*")


def story_view(story_id: str, polling: bool) -> None:
    story = get_story(story_id)
    if story is None:
        st.info("This story's runs were deleted.")
        return
    if polling and not story.active:
        st.rerun(scope="app")  # finished: draw the whole page once more, then stop polling
    rows = summary(story)
    for column, row in zip(st.columns(len(rows)), rows):
        stage_card(column, row)
    if story.active:
        current = story.current()
        if current is not None:
            st.caption(f"Now: {STAGE_TITLES[current[0]]} · the runs go on if you leave or reload this page")
        if st.button("Stop the story", icon=":material/stop:", key="presenter_stop"):
            story.request_stop()
    what_each_adds(rows)
    histories = story.histories()
    if any(not h.empty for h in histories.values()):
        st.plotly_chart(story_figure(histories), key="presenter_story_chart")
    if not story.active:
        fixed_photos(story)


with tab_story:
    story = shown_story()
    busy = story is not None and story.active
    clicked = st.button("Tell the recipe's story", type="primary", icon=":material/play_arrow:",
                        key="presenter_start", disabled=busy,
                        help="Three trainings in a row on this dataset's split: from scratch, pretrained features, "
                             "then fine-tuned from those. They are ordinary runs: the Runs page lists them too.")
    if clicked:
        try:
            story = start_story(base_config())
            st.session_state[STORY_KEY] = story.id
            st.rerun()
        except (FewShotError, OSError) as exc:
            st.error(f"The story could not start: {md(exc)}")
    if story is None:
        st.info("One click trains the recipe's three stages in a row and shows what each adds.")
    else:
        st.session_state[STORY_KEY] = story.id
        st.fragment(story_view, run_every=1.0 if story.active else None)(story.id, story.active)


# ------------------------------------------------------------------------------------------- the curve
@st.cache_data(show_spinner=False, max_entries=16)
def curve_rows(path: str, fingerprint: int, backbone: str, val_split: float, test_split: float,
               seed: int) -> tuple[list[dict], int, float]:
    started = time.perf_counter()
    result = dataset_curve(path, backbone, CurveSettings(seed=seed), val_split=val_split, test_split=test_split,
                           split_seed=seed)
    return result.rows, result.n_extracted, time.perf_counter() - started


with tab_curve:
    key = (str(dataset_path()), folder_fingerprint(dataset_path()), st.session_state["backbone"],
           st.session_state["val_split"], st.session_state["test_split"], st.session_state["seed"])
    if st.button("Draw the learning curve", type="primary", icon=":material/show_chart:", key="presenter_curve",
                 help="Small classifiers trained on 1, 2, 5, 10, 20 and all photos per class (5 random draws "
                      "each), from the cached features: nothing new goes through the network."):
        with st.spinner("Training small classifiers on 1, 2, 5, 10, 20 and all photos per class…"):
            try:
                curve_rows(*key)
                st.session_state["presenter_curve_key"] = key
            except (FewShotError, OSError) as exc:
                st.error(f"The curve could not be drawn: {md(exc)}")
    if st.session_state.get("presenter_curve_key") != key:
        st.info("How many photos per class does this dataset need? One click draws the curve, in seconds.")
    else:
        rows, n_extracted, seconds = curve_rows(*key)
        enough = enough_shots(rows)
        best = max(r["mean"] for r in rows)
        first, last = rows[0], rows[-1]
        c1, c2, c3 = st.columns(3)
        c1.metric(f"{first['shots']} photo{'s' if first['shots'] != 1 else ''} per class", f"{first['mean']:.0%}")
        c2.metric(f"{enough} photos per class", f"{next(r['mean'] for r in rows if r['shots'] == enough):.0%}")
        c3.metric(f"all ({last['n_train']} photos)", f"{last['mean']:.0%}")
        st.markdown(f"**About {enough} photos per class are enough** here: more add less than "
                    f"{PAYING_POINTS * 100:.0f} points (best: {best:.0%} of {last['n_val']} validation photos).")
        st.plotly_chart(curve_figure(rows, enough), key="presenter_curve_chart")
        st.caption(f"Each point: the mean of {last['draws']} random draws of the photos, the band from the worst to "
                   f"the best draw. {len(rows) * last['draws']} classifiers in {seconds:.1f} s; "
                   f"{n_extracted} photos went through the network.")
