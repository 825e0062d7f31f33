"""Plotly figures from plain data (pandas frames, lists): pure functions, testable without a browser."""
from __future__ import annotations

import math

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

TRAIN_COLOR, VAL_COLOR = "#1f77b4", "#ff7f0e"
# Runs compared on one chart: colours far apart (Streamlit's theme would draw the first two in two blues).
RUN_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
              "#bcbd22"]
# The legend above the plot: below it, it overlapped the "epoch" axis title.
LEGEND_ON_TOP = {"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0}


def _epoch_axis(fig: go.Figure, histories: list[pd.DataFrame]) -> None:
    """Whole epochs on the x axis: with 1–3 epochs plotly would tick 1, 1.5, 2…"""
    last = max((int(h["epoch"].max()) for h in histories if not h.empty and "epoch" in h), default=1)
    fig.update_xaxes(title_text="epoch", tickformat="d", dtick=1 if last <= 15 else None, tick0=0)


def history_figure(history: pd.DataFrame, metric: str, title: str | None = None) -> go.Figure:
    """Train vs validation `metric` ("loss" or "accuracy") per epoch; stages (bottleneck, finetune) marked."""
    fig = go.Figure()
    if not history.empty:
        fig.add_scatter(x=history["epoch"], y=history[metric], mode="lines+markers", name=f"train {metric}",
                        line={"color": TRAIN_COLOR})
        if f"val_{metric}" in history and history[f"val_{metric}"].notna().any():
            fig.add_scatter(x=history["epoch"], y=history[f"val_{metric}"], mode="lines+markers",
                            name=f"validation {metric}", line={"color": VAL_COLOR})
        if "stage" in history and history["stage"].nunique() > 1:
            for stage, rows in history.groupby("stage", sort=False):
                if rows["epoch"].min() > history["epoch"].min():
                    fig.add_vline(x=rows["epoch"].min() - 0.5, line_dash="dot",
                                  annotation_text=f"{stage} starts", annotation_position="top left")
    fig.update_layout(title=title or metric.capitalize(), yaxis_title=metric, height=340,
                      margin={"l": 10, "r": 10, "t": 70, "b": 10}, legend=LEGEND_ON_TOP)
    _epoch_axis(fig, [history])
    if metric == "accuracy":
        fig.update_yaxes(range=[0, 1.02])
    return fig


def overlay_figure(histories: dict[str, pd.DataFrame], metric: str = "val_accuracy") -> go.Figure:
    """The same metric for several runs on one chart (scratch vs bottleneck vs fine-tune)."""
    fig = go.Figure()
    for i, (name, history) in enumerate(histories.items()):
        if not history.empty and metric in history and history[metric].notna().any():
            fig.add_scatter(x=history["epoch"], y=history[metric], mode="lines+markers", name=name,
                            line={"color": RUN_COLORS[i % len(RUN_COLORS)]},
                            marker={"color": RUN_COLORS[i % len(RUN_COLORS)]})
    fig.update_layout(title=metric.replace("_", " "), yaxis_title=metric, height=400,
                      margin={"l": 10, "r": 10, "t": 90, "b": 10}, legend=LEGEND_ON_TOP)
    _epoch_axis(fig, list(histories.values()))
    return fig


AXIS_NAME_CHARS = 18  # longer class names are cut with an ellipsis on a chart's axis (whole in the hover text)


def axis_name(name: str, limit: int = AXIS_NAME_CHARS) -> str:
    """A class name short enough for an axis: whole, or its start and an ellipsis (never broken onto two lines)."""
    name = str(name)
    return name if len(name) <= limit else name[:limit - 1].rstrip() + "…"


def confusion_figure(matrix: list[list[int]], classes: list[str]) -> go.Figure:
    """Rows: true class, columns: predicted; counts written in the cells. Clickable cells in the app."""
    fig = px.imshow(matrix, x=classes, y=classes, text_auto=True, color_continuous_scale="Blues",
                    labels={"x": "predicted", "y": "true", "color": "images"}, aspect="auto")
    fig.update_layout(height=120 + 45 * len(classes), margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      coloraxis_showscale=False)
    # Class names are text: without this, plotly puts names like "01", "1", "1e3" on a numeric axis. Long names
    # would take the room of the cells (on a narrow page most of it): the axis shows them cut.
    ticks = {"tickmode": "array", "tickvals": list(classes), "ticktext": [axis_name(c) for c in classes]}
    fig.update_xaxes(side="top", type="category", **ticks)
    fig.update_yaxes(type="category", **ticks)
    return fig


def class_counts_figure(counts: pd.DataFrame) -> go.Figure:
    """Stacked bars: images per class, split into train / val / test."""
    splits = [c for c in ("train", "val", "test") if c in counts.columns]
    long = counts.reset_index().melt(id_vars="class", value_vars=splits, var_name="split", value_name="images")
    fig = px.bar(long, x="class", y="images", color="split", barmode="stack",
                 color_discrete_map={"train": TRAIN_COLOR, "val": VAL_COLOR, "test": "#2ca02c"})
    fig.update_layout(height=320, margin={"l": 10, "r": 10, "t": 10, "b": 10}, legend={"orientation": "h"})
    fig.update_xaxes(type="category")  # class names are text, even "01" or "1e3"
    return fig


STAGE_COLORS = {"From scratch": "#7f7f7f", "Pretrained features": TRAIN_COLOR, "Fine-tuned": "#2ca02c"}


def story_figure(histories: dict[str, pd.DataFrame], font_size: int = 18) -> go.Figure:
    """The recipe's three stages on one chart: validation accuracy per epoch, each stage in its colour; large type
    for a projector."""
    fig = go.Figure()
    for name, history in histories.items():
        if not history.empty and "val_accuracy" in history and history["val_accuracy"].notna().any():
            fig.add_scatter(x=history["epoch"], y=history["val_accuracy"], mode="lines+markers", name=name,
                            line={"color": STAGE_COLORS.get(name), "width": 4}, marker={"size": 9})
    fig.update_layout(title="Validation accuracy, epoch by epoch", xaxis_title="epoch",
                      yaxis_title="validation accuracy", height=420, font={"size": font_size},
                      margin={"l": 10, "r": 10, "t": 60, "b": 10}, legend={"orientation": "h", "y": -0.2})
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    return fig


def curve_figure(rows: list[dict], enough: int | None = None, font_size: int = 18) -> go.Figure:
    """How many photos do I need: mean validation accuracy against photos per class (log scale), the band from
    the worst to the best draw, and where more photos stop paying."""
    frame = pd.DataFrame(rows)
    fig = go.Figure()
    if not frame.empty:
        labels = [f"all ({k})" if is_all else str(k) for k, is_all in zip(frame["shots"], frame["all"])]
        fig.add_scatter(x=frame["shots"], y=frame["max"], mode="lines", line={"width": 0}, showlegend=False,
                        hoverinfo="skip")
        fig.add_scatter(x=frame["shots"], y=frame["min"], mode="lines", line={"width": 0}, fill="tonexty",
                        fillcolor="rgba(31, 119, 180, 0.2)", name="worst to best draw", hoverinfo="skip")
        fig.add_scatter(x=frame["shots"], y=frame["mean"], mode="lines+markers+text", name="mean of the draws",
                        line={"color": TRAIN_COLOR, "width": 4}, marker={"size": 11},
                        # Labels where the story is (first, enough, all): a row of "100%" would overprint.
                        text=[f"{m:.0%}" if k in (frame["shots"].iloc[0], enough, frame["shots"].iloc[-1])
                              else "" for k, m in zip(frame["shots"], frame["mean"])],
                        textposition="top center",
                        customdata=labels, hovertemplate="%{customdata} photos per class: %{y:.1%}<extra></extra>")
        # A log axis's range is in log10 units; set it, or the line below can stretch the autorange.
        fig.update_xaxes(type="log", tickvals=frame["shots"].tolist(), ticktext=labels,
                         range=[math.log10(frame["shots"].min()) - 0.1, math.log10(frame["shots"].max()) + 0.1])
        if enough is not None:
            fig.add_vline(x=enough, line_dash="dash", line_color=VAL_COLOR, line_width=3,
                          annotation_text=f"{enough} per class is enough", annotation_position="bottom right",
                          annotation_font_size=font_size)
    fig.update_layout(title="Validation accuracy against photos per class", xaxis_title="photos per class",
                      yaxis_title="validation accuracy", height=440, font={"size": font_size},
                      margin={"l": 10, "r": 10, "t": 60, "b": 10}, legend={"orientation": "h", "y": -0.25})
    fig.update_yaxes(range=[0, 1.08], tickformat=".0%")
    return fig


UNLABELLED_COLOR = "#9e9e9e"


def photo_map_figure(frame: pd.DataFrame) -> go.Figure:
    """The photo map (core.photo_map rows): one dot per photo, a colour per label (unlabelled grey); an ✕ where
    a run got it wrong, a diamond where its neighbours suggest another label. `customdata` is the row's index."""
    fig = go.Figure()
    palette = px.colors.qualitative.Plotly
    labels = sorted(str(label) for label in frame["label"].dropna().unique())
    groups = [(label, frame[frame["label"] == label], palette[i % len(palette)]) for i, label in enumerate(labels)]
    groups.append(("unlabelled", frame[frame["label"].isna()], UNLABELLED_COLOR))
    for name, rows, color in groups:
        if rows.empty:
            continue
        symbols = ["x" if wrong else "diamond" if isinstance(doubt, str) else "circle"
                   for wrong, doubt in zip(rows["wrong"], rows["doubt"])]
        text = []
        for _, row in rows.iterrows():
            lines = [row["path"].rsplit("/", 1)[-1], f"label: {row['label'] if row['label'] is not None else '—'}"]
            if row["wrong"]:
                lines.append(f"the model said: {row['predicted']}")
            if isinstance(row["doubt"], str):
                lines.append(f"its neighbours are: {row['doubt']}")
            text.append("<br>".join(lines))
        fig.add_scatter(x=rows["x"], y=rows["y"], mode="markers", name=f"{name} ({len(rows)})",
                        customdata=rows.index.to_numpy(), hovertext=text, hoverinfo="text",
                        marker={"color": color, "size": 10, "symbol": symbols, "line": {"width": 1, "color": "white"}})
    fig.update_layout(height=560, dragmode="lasso", hovermode="closest", legend={"orientation": "h", "y": -0.05},
                      margin={"l": 10, "r": 10, "t": 10, "b": 10})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    return fig


def points_from_selection(selection: dict | None) -> list[int]:
    """Row indices (customdata) of the dots selected on the photo map (clicked, boxed or lassoed)."""
    out = []
    for point in (selection or {}).get("points") or []:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)):
            data = data[0] if data else None
        if isinstance(data, (int, float)):
            out.append(int(data))
    return sorted(set(out))
