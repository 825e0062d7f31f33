"""Plotly figures from plain data (pandas frames, lists): pure functions, testable without a browser."""
from __future__ import annotations

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
