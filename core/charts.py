"""Plotly figures from plain data (pandas frames, lists): pure functions, testable without a browser."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

TRAIN_COLOR, VAL_COLOR = "#1f77b4", "#ff7f0e"


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
    fig.update_layout(title=title or metric.capitalize(), xaxis_title="epoch", yaxis_title=metric,
                      height=320, margin={"l": 10, "r": 10, "t": 40, "b": 10}, legend={"orientation": "h"})
    if metric == "accuracy":
        fig.update_yaxes(range=[0, 1.02])
    return fig


def overlay_figure(histories: dict[str, pd.DataFrame], metric: str = "val_accuracy") -> go.Figure:
    """The same metric for several runs on one chart (scratch vs bottleneck vs fine-tune)."""
    fig = go.Figure()
    for name, history in histories.items():
        if not history.empty and metric in history and history[metric].notna().any():
            fig.add_scatter(x=history["epoch"], y=history[metric], mode="lines+markers", name=name)
    fig.update_layout(title=metric.replace("_", " "), xaxis_title="epoch", yaxis_title=metric, height=380,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10}, legend={"orientation": "h"})
    return fig


def confusion_figure(matrix: list[list[int]], classes: list[str]) -> go.Figure:
    """Rows: true class, columns: predicted; counts written in the cells. Clickable cells in the app."""
    fig = px.imshow(matrix, x=classes, y=classes, text_auto=True, color_continuous_scale="Blues",
                    labels={"x": "predicted", "y": "true", "color": "images"}, aspect="auto")
    fig.update_layout(height=120 + 45 * len(classes), margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      coloraxis_showscale=False)
    fig.update_xaxes(side="top")
    return fig


def class_counts_figure(counts: pd.DataFrame) -> go.Figure:
    """Stacked bars: images per class, split into train / val / test."""
    splits = [c for c in ("train", "val", "test") if c in counts.columns]
    long = counts.reset_index().melt(id_vars="class", value_vars=splits, var_name="split", value_name="images")
    fig = px.bar(long, x="class", y="images", color="split", barmode="stack",
                 color_discrete_map={"train": TRAIN_COLOR, "val": VAL_COLOR, "test": "#2ca02c"})
    fig.update_layout(height=320, margin={"l": 10, "r": 10, "t": 10, "b": 10}, legend={"orientation": "h"})
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
