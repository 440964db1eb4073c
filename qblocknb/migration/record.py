"""What a storage migration did, as frames: each step's row, the ``query-migrate`` samples, one timeline.

Rows are plain dicts a view may copy as they change: ``begin`` adds a step as running, ``end`` closes it as
ok or failed with the reason in ``detail``.
"""

from __future__ import annotations

import time

import pandas as pd

from qblocknb.live.jobs import Job

STEP_COLUMNS = ["step", "name", "machine", "command", "started", "duration_s", "outcome", "detail"]
PROGRESS_COLUMNS = ["t", "status", "transferred", "remaining", "total", "mbps"]
TIMELINE_COLUMNS = ["t", "activity", "status", "done", "total"]


class MigrationRecord:
    """Step rows and migration samples, on the clock of the flow's start (monotonic ``started``)."""

    def __init__(self, started: float) -> None:
        self.started = started
        self._rows: list[dict] = []
        self._samples: list[dict] = []
        self._begun: dict[int, float] = {}

    def begin(self, number: int, name: str, machine: str, command: str) -> dict:
        row = {
            "step": number,
            "name": name,
            "machine": machine,
            "command": command,
            "started": pd.Timestamp.now(),
            "duration_s": float("nan"),
            "outcome": "running",
            "detail": "",
        }
        self._rows.append(row)
        self._begun[id(row)] = time.monotonic()
        return row

    def end(self, row: dict, outcome: str, detail: str = "") -> dict:
        row.update(duration_s=time.monotonic() - self._begun.pop(id(row)), outcome=outcome, detail=detail)
        return row

    def sample(self, info: dict) -> None:
        """One ``query-migrate`` answer."""
        ram = info.get("ram", {})
        self._samples.append(
            {
                "t": time.monotonic() - self.started,
                "status": info.get("status"),
                "transferred": ram.get("transferred", 0),
                "remaining": ram.get("remaining", 0),
                "total": ram.get("total", 0),
                "mbps": ram.get("mbps", 0.0),
            }
        )

    @property
    def steps(self) -> pd.DataFrame:
        return pd.DataFrame(list(self._rows), columns=STEP_COLUMNS)

    @property
    def progress(self) -> pd.DataFrame:
        return pd.DataFrame(list(self._samples), columns=PROGRESS_COLUMNS)

    def timeline(self, job: Job | None) -> pd.DataFrame:
        """The mirror ``job`` and the migration on one clock, bytes done of total."""
        rows = []
        if job is not None:
            shift = job.started - self.started
            for sample in job.timeline.itertuples(index=False):
                rows.append([sample.t + shift, "mirror", sample.status, sample.offset, sample.len])
        for sample in self._samples:
            done = sample["total"] - sample["remaining"] if sample["total"] else 0
            rows.append([sample["t"], "migration", sample["status"], done, sample["total"]])
        return pd.DataFrame(rows, columns=TIMELINE_COLUMNS).sort_values("t", ignore_index=True)
