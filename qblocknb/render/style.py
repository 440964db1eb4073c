"""Colours and graphviz attributes of the chain diagram, in one place.

Each job type has its own colour, used for its data-flow arrow and for the
border of the images it touches; grey means "left the chain", green "new",
orange "re-pointed".
"""

from __future__ import annotations

from qblocknb.model.palette import (
    BLUE,
    DARK_BLUE,
    DARK_YELLOW,
    ERROR,
    INK,
    JOB_COLOURS,
    MUTED,
    OK,
    ORANGE,
    OTHER_JOB,
    TEAL,
    YELLOW,
)

__all__ = ["INK", "MUTED", "job_colour"]  # the diagram's own names below, and the palette's it shares

FONT = "Helvetica"
IMAGE_FILL = "#eef4fb"
IMAGE_BORDER = BLUE
ACTIVE_FILL = "#d5e5f8"
ACTIVE_BORDER = DARK_BLUE
TARGET_FILL = "#fbf7ee"
RETIRED_FILL = "#f3f3f3"
INVALID = ERROR
NEW = OK
NEW_FILL = "#e4f5d2"
REPOINTED = ORANGE
BITMAP_FILL = YELLOW
BITMAP_BORDER = DARK_YELLOW
DEVICE_FILL = "#ffffff"
HIGHLIGHT = ERROR  # what a finding is about

GRAPH = {"rankdir": "LR", "fontname": FONT, "nodesep": "0.3", "ranksep": "0.45", "bgcolor": "transparent"}
NODE = {"fontname": FONT, "fontsize": "11", "shape": "box", "style": "rounded,filled", "margin": "0.12,0.06"}
EDGE = {"fontname": FONT, "fontsize": "10", "color": INK}


def job_colour(job_type: str) -> str:
    """The colour of a job type's arrow."""
    return JOB_COLOURS.get(job_type, OTHER_JOB)


# The full block graph: one shape and colour per kind of node.
GRAPH_NODES = {
    "device": {"shape": "box", "style": "rounded,filled", "fillcolor": DEVICE_FILL, "color": DARK_BLUE},
    "backend": {"shape": "box", "style": "rounded,filled,dashed", "fillcolor": DEVICE_FILL, "color": DARK_BLUE},
    "format": {"shape": "box", "style": "rounded,filled", "fillcolor": IMAGE_FILL, "color": IMAGE_BORDER},
    "protocol": {"shape": "note", "style": "filled", "fillcolor": RETIRED_FILL, "color": MUTED},
    "filter": {"shape": "hexagon", "style": "filled", "fillcolor": "#fde9d9", "color": ORANGE},
    "job": {"shape": "ellipse", "style": "filled,bold", "fillcolor": "#ffffff"},
    "export": {"shape": "component", "style": "filled", "fillcolor": "#e0f4f4", "color": TEAL},
}
CONFLICT = ERROR
