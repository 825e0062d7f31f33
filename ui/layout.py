"""Layout that fits the room there is: card grids that choose their column count from the page's width, names kept
whole (an ellipsis and a tooltip instead of a break mid-word), and the frame's CSS.

Streamlit has no viewport-width API; plain CSS on keyed containers does it. A container made with
`st.container(key="x")` carries the class `st-key-x`, so a key prefix is a CSS hook.
"""
from __future__ import annotations

import html

import streamlit as st

GRID_PREFIX = "fsgrid-"   # st.container(key=GRID_PREFIX + …): a responsive grid of cards
ROW_PREFIX = "fsrow-"     # st.container(key=ROW_PREFIX + …): widgets side by side, wrapping when narrow
PANELS_PREFIX = "fspanels-"  # st.container(key=PANELS_PREFIX + …): panels side by side when wide, stacked when not
STICKY_PREFIX = "fssticky-"  # st.container(key=STICKY_PREFIX + …) in a column: the column stays in view
NAME_CLASS = "fs-name"    # one line of text, cut with an ellipsis, the whole text in its tooltip
TABLE_CLASS = "fs-table"  # names_table: names whole (or cut with an ellipsis and a tooltip), numbers aligned

FRAME_CSS = f"""<style>
/* A card grid: as many columns of at least 11rem as fit, each card as wide as its column. */
[class*="st-key-{GRID_PREFIX}"] {{
  display: grid !important;
  grid-template-columns: repeat(auto-fill, minmax(11rem, 1fr));
  gap: 0.75rem;
}}
[class*="st-key-{GRID_PREFIX}"] > div {{ min-width: 0; width: auto !important; }}
/* A row of widgets: side by side while they fit (each at least 10rem), onto the next line when not. */
[class*="st-key-{ROW_PREFIX}"] {{
  flex-direction: row !important; flex-wrap: wrap; align-items: flex-end; gap: 0.75rem;
}}
[class*="st-key-{ROW_PREFIX}"] > div {{ flex: 1 1 10rem; min-width: 10rem; width: auto !important; }}
/* Panels (a chart and a table): side by side while each gets at least 26rem, one above the other when not. A
   chart then takes the whole width instead of being squeezed into half of a narrow page. */
[class*="st-key-{PANELS_PREFIX}"] {{
  display: grid !important;
  grid-template-columns: repeat(auto-fit, minmax(min(100%, 26rem), 1fr));
  gap: 1rem; align-items: start;
}}
[class*="st-key-{PANELS_PREFIX}"] > div {{ min-width: 0; width: auto !important; }}
/* A column holding a sticky container stays in view while its neighbour column (long settings) scrolls. */
[data-testid="stColumn"]:has([class*="st-key-{STICKY_PREFIX}"]) {{
  position: sticky; top: 3.75rem; align-self: flex-start; }}
/* Names on one line: never broken mid-word ("renewable_ene / rgy"), cut with an ellipsis when too long. */
.{NAME_CLASS} {{ white-space: nowrap; overflow: hidden; text-overflow: ellipsis; max-width: 100%; line-height: 1.5; }}
/* A table of names and numbers (names_table): as wide as its container, the numbers' columns narrow, the names'
   column takes the rest and cuts a long name with an ellipsis (whole in its tooltip). */
.{TABLE_CLASS} {{ max-height: 24rem; overflow-y: auto; border: 1px solid rgba(49, 51, 63, 0.1);
  border-radius: 0.5rem; }}
.{TABLE_CLASS} table {{ width: 100%; table-layout: fixed; border-collapse: collapse; font-size: 0.875rem;
  margin: 0; }}
.{TABLE_CLASS} th, .{TABLE_CLASS} td {{ padding: 0.4rem 0.6rem; border: none;
  border-bottom: 1px solid rgba(49, 51, 63, 0.1); }}
.{TABLE_CLASS} th {{ position: sticky; top: 0; background: #f8f9fb; font-weight: 400; color: rgba(49, 51, 63, 0.7);
  text-align: left; }}
.{TABLE_CLASS} th.num, .{TABLE_CLASS} td.num {{ width: 4.75rem; text-align: right;
  font-variant-numeric: tabular-nums; }}
.{TABLE_CLASS} tr:last-child td {{ border-bottom: none; }}
[class*="st-key-{GRID_PREFIX}"] [data-testid="stCaptionContainer"] p {{
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }}
/* Streamlit's own Stop (it stops the page script, not the training) would sit beside the training's Stop while
   the live view polls; only the training's is wanted. The running indicator stays. */
[data-testid="stStatusWidget"] button {{ display: none !important; }}
</style>"""


def frame_css() -> None:
    """Called by app.py on every run (a style-only st.html takes no room on the page)."""
    st.html(FRAME_CSS)


def grid(key: str):
    """A responsive grid: each element (or container) put in it is a card in the next free cell."""
    return st.container(key=GRID_PREFIX + key)


def row(key: str):
    """Widgets side by side that wrap onto a new line when the window is narrow (instead of st.columns, which
    keeps its count and clips them)."""
    return st.container(key=ROW_PREFIX + key)


def panels(key: str):
    """A container of panels (`with panels("x"): with st.container(): …` for each): side by side on a wide page,
    stacked on a narrow one (st.columns would keep them side by side and squeeze both)."""
    return st.container(key=PANELS_PREFIX + key)


def sticky(key: str):
    """A container whose column stays in view while the page scrolls (on a wide window; stacked columns of a
    narrow one scroll as usual)."""
    return st.container(key=STICKY_PREFIX + key)


def name_line(text: str, *, bold: bool = True, color: str | None = None, suffix: str = "") -> None:
    """`text` on one line, whole in its tooltip; `suffix` (plain text, e.g. "93% sure") follows it."""
    shown = html.escape(str(text))
    if bold:
        shown = f"<b>{shown}</b>"
    style = f' style="color:{color}"' if color else ""
    tail = f" · {html.escape(suffix)}" if suffix else ""
    st.html(f'<div class="{NAME_CLASS}"{style} title="{html.escape(str(text), quote=True)}">{shown}{tail}</div>')


def names_table(rows: list[tuple[str, list[str]]], name_header: str, headers: list[tuple[str, str]]) -> None:
    """A small table with a name per row (one line, an ellipsis and a tooltip when too long: st.dataframe clips
    a long name mid-word or pushes the numbers out of sight) and already formatted numbers. `headers`: (title,
    tooltip) of each number column."""
    head = f'<th>{html.escape(name_header)}</th>' + "".join(
        f'<th class="num" title="{html.escape(tip, quote=True)}">{html.escape(title)}</th>' for title, tip in headers)
    body = "".join(
        f'<tr><td><div class="{NAME_CLASS}" title="{html.escape(str(name), quote=True)}">{html.escape(str(name))}'
        f'</div></td>' + "".join(f'<td class="num">{html.escape(value)}</td>' for value in values) + "</tr>"
        for name, values in rows)
    st.html(f'<div class="{TABLE_CLASS}"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')
