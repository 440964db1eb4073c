"""Colours and graphviz attributes of the chain diagram, in one place.

Each job type has its own colour, used for its data-flow arrow and for the
border of the images it touches; grey means "left the chain", green "new",
orange "re-pointed".
"""

from __future__ import annotations

FONT = "Helvetica"
INK = "#2e3436"
MUTED = "#888a85"
IMAGE_FILL = "#eef4fb"
IMAGE_BORDER = "#3465a4"
ACTIVE_FILL = "#d5e5f8"
ACTIVE_BORDER = "#204a87"
TARGET_FILL = "#fbf7ee"
RETIRED_FILL = "#f3f3f3"
INVALID = "#a40000"
NEW = "#4e9a06"
NEW_FILL = "#e4f5d2"
REPOINTED = "#ce5c00"
BITMAP_FILL = "#fce94f"
DEVICE_FILL = "#ffffff"

JOB_COLOURS = {
    "stream": "#4e9a06",
    "commit": "#c17d11",
    "mirror": "#75507b",
    "backup": "#06989a",
}
OTHER_JOB = "#5c3566"

GRAPH = {"rankdir": "LR", "fontname": FONT, "nodesep": "0.3", "ranksep": "0.45", "bgcolor": "transparent"}
NODE = {"fontname": FONT, "fontsize": "11", "shape": "box", "style": "rounded,filled", "margin": "0.12,0.06"}
EDGE = {"fontname": FONT, "fontsize": "10", "color": INK}


def job_colour(job_type: str) -> str:
    """The colour of a job type's arrow."""
    return JOB_COLOURS.get(job_type, OTHER_JOB)
