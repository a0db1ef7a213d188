"""The result grid of the query builder: one tile (thumbnail, caption, "why?" button) per result."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ipywidgets as W
import pandas as pd

from ..session import QuerySession, skin_label
from ..viz import format_value

__all__ = ["Tile", "ResultGrid", "caption", "figure_output", "html_output"]

_RELEVANT_BORDER = "3px solid #2ca02c"
_OTHER_BORDER = "1px solid #cccccc"
_NO_TRUTH_BORDER = "1px solid transparent"


@dataclass
class Tile:
    """The widgets of one result tile."""

    box: W.VBox
    image: W.Image
    caption: W.HTML
    button: W.Button


def figure_output(fig: Any, dpi: int = 90) -> dict:
    """A matplotlib Figure as an Output-widget display_data entry (image/png)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": base64.b64encode(buf.getvalue()).decode("ascii"), "text/plain": repr(fig)}}


def html_output(text: str) -> dict:
    """HTML as an Output-widget display_data entry."""
    return {"output_type": "display_data", "metadata": {}, "data": {"text/html": text, "text/plain": text}}


def caption(row: pd.Series) -> str:
    """A result's caption: rank and case id (a tick when relevant), diagnosis, skin type, the scores."""
    e = html.escape
    mark = ""
    if "relevant" in row and not pd.isna(row["relevant"]):
        mark = " <span title='relevant'>&#10003;</span>" if bool(row["relevant"]) else ""
    lines = [f"<b>#{int(row['rank'])} {e(str(row['case_id']))}</b>{mark}"]
    if "diagnosis" in row:
        group = f" ({e(str(row['diagnosis_group']))})" if "diagnosis_group" in row else ""
        lines.append(f"{e(str(row['diagnosis']))}{group}")
    if "fitzpatrick" in row:
        lines.append(f"skin type {skin_label(row['fitzpatrick'])}")
    lines.append(f"s_global {format_value(row['s_global'])} &middot; s_local {format_value(row['s_local'])}")
    lines.append(f"<b>score {format_value(row['score'])}</b>")
    return f"<div style='font-size:11px;line-height:1.3;text-align:center'>{'<br>'.join(lines)}</div>"


class ResultGrid:
    """A GridBox of result tiles (:attr:`widget`); tiles are made once and reused by later results.

    ``on_why(rank)`` runs when the "why?" button of the tile at ``rank`` (1-based) is pressed.
    """

    def __init__(self, session: QuerySession, thumb: int, on_why: Callable[[int], Any]):
        self.session, self.thumb, self.on_why = session, int(thumb), on_why
        self.tiles: list[Tile] = []
        self.widget = W.GridBox(children=(), layout=W.Layout(
            grid_template_columns=f"repeat(auto-fill, minmax({self.thumb + 60}px, 1fr))", grid_gap="8px",
            overflow="visible"))
        self.widget.add_class("dermretr-grid")

    def tile(self, position: int) -> Tile:
        """The tile at ``position`` (0-based), made when it does not exist yet."""
        while len(self.tiles) <= position:
            rank = len(self.tiles) + 1
            image = W.Image(format="png", layout=W.Layout(width=f"{self.thumb}px", height=f"{self.thumb}px"))
            image.add_class("dermretr-result")
            text = W.HTML()
            text.add_class("dermretr-caption")
            button = W.Button(description="why?", tooltip="attribution overlay and mask maps of this result",
                              layout=W.Layout(width=f"{self.thumb}px"))
            button.add_class("dermretr-why")
            button.on_click(lambda _, rank=rank: self.on_why(rank))
            box = W.VBox([image, text, button], layout=W.Layout(padding="4px", border=_NO_TRUTH_BORDER,
                                                               align_items="center"))
            box.add_class("dermretr-tile")
            self.tiles.append(Tile(box, image, text, button))
        return self.tiles[position]

    def show(self, res: pd.DataFrame) -> None:
        """One tile per row of ``res``: thumbnail, caption, green frame for a relevant result."""
        boxes = []
        for i in range(len(res)):
            row = res.iloc[i]
            tile = self.tile(i)
            tile.image.value = self.session.thumbnail_png(row["image_path"], self.thumb)
            tile.caption.value = caption(row)
            rel = row.get("relevant", pd.NA)
            if pd.isna(rel):
                tile.box.layout.border = _NO_TRUTH_BORDER
                tile.box.remove_class("dermretr-relevant")
            elif bool(rel):
                tile.box.layout.border = _RELEVANT_BORDER
                tile.box.add_class("dermretr-relevant")
            else:
                tile.box.layout.border = _OTHER_BORDER
                tile.box.remove_class("dermretr-relevant")
            boxes.append(tile.box)
        self.widget.children = tuple(boxes)
