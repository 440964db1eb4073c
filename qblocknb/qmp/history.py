"""The record of every command a session sent: what, with which arguments, how long, and how it ended.

``vm.history`` is a DataFrame of it, which also writes the session out: ``to_script(path)`` as a
qmp-shell script (``qblocknb.model.script``), ``to_pytest(path)`` as a test that replays it (given an
``exporter``, which a recorded session has: ``qblocknb.live.recorder``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pandas as pd

from qblocknb.errors import Error
from qblocknb.model.listeners import Listeners
from qblocknb.model.script import Entry, Mark, script_text

COLUMNS = ("time", "command", "arguments", "duration_s", "outcome", "result", "error", "virsh")
WAITED = {"ready": "ready", "concluded": "concluded", "null": "concluded"}  # job statuses a replay waits for


@dataclass
class CommandRecord:
    """One QMP command and its outcome."""

    time: float
    command: str
    arguments: dict
    duration_s: float = 0.0
    outcome: str = "pending"
    result: object = None
    error: str = ""
    virsh: str = ""  # the same intent as a virsh line, when the session was told how to say it


@dataclass
class History:
    """Thread-safe list of CommandRecords with a DataFrame view.

    ``before`` is told ``(command, arguments)`` just before a recorded command goes out (a recorder looks at
    the state then); ``marks`` are the moments jobs became ready or ended, for the waits of a replay;
    ``virsh`` says a command as a virsh line (a Machine gives it, knowing the chain the command was checked on).
    """

    records: list[CommandRecord] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    before: Listeners = field(default_factory=Listeners, repr=False)
    exporter: Callable[[Path], Path] | None = field(default=None, repr=False)
    virsh: Callable[[str, dict], str] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def start(self, command: str, arguments: dict, virsh: str = "") -> CommandRecord:
        record = CommandRecord(time.time(), command, dict(arguments), virsh=virsh)
        with self._lock:
            self.records.append(record)
        return record

    @staticmethod
    def finish(record: CommandRecord, started: float, result: object = None, error: str = "") -> None:
        record.duration_s = time.monotonic() - started
        record.outcome = "error" if error else "ok"
        record.result, record.error = result, error

    def recorded(self, command: str, arguments: dict, call: Callable[[], object], record: bool = True) -> object:
        """Run ``call`` (which sends ``command``), keeping its duration and result or error; ``record=False``
        runs it unrecorded (the quiet queries of views and checks)."""
        if not record:
            return call()
        self.before.notify(command, arguments)
        line = self.virsh(command, arguments) if self.virsh else ""
        entry, started = self.start(command, arguments, line), time.monotonic()
        try:
            result = call()
        except Error as error:
            History.finish(entry, started, error=str(error))
            raise
        History.finish(entry, started, result=result)
        return result

    def on_event(self, event: dict) -> None:
        """Keep the moment a job became ready or ended (``JOB_STATUS_CHANGE``), by QEMU's clock: it is earlier
        than any command sent because of it, even when this event is handled later."""
        data = event.get("data") or {}
        status = WAITED.get(data.get("status", "")) if event.get("event") == "JOB_STATUS_CHANGE" else None
        if status is None:
            return
        stamp = event.get("timestamp") or {}
        at = stamp["seconds"] + stamp.get("microseconds", 0) / 1e6 if "seconds" in stamp else time.time()
        with self._lock:
            self.marks.append(Mark(at, data["id"], status))

    def frame(self) -> HistoryFrame:
        with self._lock:
            rows = [vars(r).copy() for r in self.records]
        frame = HistoryFrame(rows, columns=[*COLUMNS])
        frame["time"] = pd.to_datetime(frame["time"], unit="s")
        frame.history = self
        return frame


class HistoryFrame(pd.DataFrame):
    """``vm.history``: a DataFrame that can write its commands out (a slice writes only its own rows)."""

    _metadata: ClassVar[list[str]] = ["history"]
    history: History | None = None

    @property
    def _constructor(self) -> type[HistoryFrame]:
        return HistoryFrame

    def to_script(self, path: str | Path) -> Path:
        """Write these commands as a qmp-shell script, with the waits the session made as ``# wait:`` notes."""
        history = self._history("a qmp-shell script")
        entries = [_entry(history.records[i]) for i in self.index]
        path = Path(path)
        path.write_text(script_text(entries, list(history.marks)) + "\n")
        return path

    def to_pytest(self, path: str | Path) -> Path:
        """Write a pytest file that rebuilds the lab, replays the whole session and checks what it saw."""
        history = self._history("a pytest file")
        if history.exporter is None:
            raise Error(
                "this session cannot be written as a pytest file",
                "the images it started from were not recorded",
                "start it from qblocknb.live.recorder.RecordingLab() with a plain launch (no guest, incoming, wrapper)",
            )
        return history.exporter(Path(path))

    def _history(self, what: str) -> History:
        if self.history is None:
            raise Error(f"this frame cannot be written as {what}", "it is not a session's history", "use vm.history")
        return self.history


def _entry(record: CommandRecord) -> Entry:
    return Entry(record.time, record.command, record.arguments, record.error)
