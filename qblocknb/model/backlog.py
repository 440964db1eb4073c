"""A mirror's dirty backlog: what it still has to copy (``len - offset``), and whether that is shrinking.

A mirror copies while the guest writes: each guest write to a cluster already copied raises ``len`` again, each
copy raises ``offset``. When the guest writes faster than the target takes data, the backlog stays put or grows
and READY never comes. ``copy-mode=write-blocking`` (at the start, or ``job.change(copy_mode=...)`` where QEMU
has ``block-job-change``) makes every guest write also reach the target before it completes, so it adds nothing
to the backlog, which then only shrinks::

    >>> import pandas as pd
    >>> timeline = pd.DataFrame({"t": [0.0, 1.0, 4.0], "offset": [0, 2 << 20, 6 << 20], "len": [8 << 20] * 3})
    >>> b = backlog(timeline)
    >>> b.bytes, b.shrinking, b.rate
    (2097152, True, -1398101.3333333333)
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

WINDOW = 3.0  # seconds looked back to tell a trend from a sample's noise


@dataclass(frozen=True)
class Backlog:
    """The backlog now and ``seconds`` earlier."""

    bytes: int
    earlier: int
    seconds: float

    @property
    def rate(self) -> float:
        """Bytes per second the backlog changed by (negative: shrinking)."""
        return (self.bytes - self.earlier) / self.seconds if self.seconds > 0 else 0.0

    @property
    def shrinking(self) -> bool:
        return self.bytes < self.earlier


def backlog(timeline: pd.DataFrame, window: float = WINDOW) -> Backlog | None:
    """The backlog from a job's timeline (``t``, ``offset``, ``len``); None before two samples."""
    rows = timeline.dropna(subset=["offset", "len"])
    if len(rows) < 2:
        return None
    last = rows.iloc[-1]
    earlier = rows[rows.t <= last.t - window]
    first = earlier.iloc[-1] if len(earlier) else rows.iloc[0]
    left = int(last["len"] - last["offset"])
    return Backlog(left, int(first["len"] - first["offset"]), float(last.t - first.t))
