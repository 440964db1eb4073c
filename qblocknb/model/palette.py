"""Every colour the toolkit shows, named once (the Tango palette): diagrams, widgets and plots agree.

>>> STATUS_COLOURS["ready"], OUTCOME_COLOURS["failed"] == ERROR
('#729fcf', True)
"""

from __future__ import annotations

INK = "#2e3436"
MUTED = "#888a85"
SUBTLE = "#d3d7cf"
BACKGROUND = "#eeeeec"
OK = "#4e9a06"  # done, new, verified
WARN = "#c17d11"  # cancelled, commit
ERROR = "#a40000"
BLUE = "#3465a4"
DARK_BLUE = "#204a87"
PURPLE = "#75507b"
ORANGE = "#ce5c00"
YELLOW = "#fce94f"
DARK_YELLOW = "#c4a000"
TEAL = "#06989a"
GREY = "#555753"

JOB_COLOURS = {"stream": OK, "commit": WARN, "mirror": PURPLE, "backup": TEAL}
OTHER_JOB = "#5c3566"
OUTCOME_COLOURS = {"completed": OK, "cancelled": WARN, "failed": ERROR}
STATUS_COLOURS = {
    "created": SUBTLE,
    "running": "#8ae234",
    "paused": "#babdb6",
    "ready": "#729fcf",
    "standby": "#a9c7e8",
    "waiting": YELLOW,
    "pending": "#fcaf3e",
    "aborting": "#ef2929",
    "concluded": GREY,
    "null": INK,
}
