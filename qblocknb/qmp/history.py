"""The record of every command a session sent: what, with which arguments, how long, and how it ended."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from qblocknb.errors import Error


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


@dataclass
class History:
    """Thread-safe list of CommandRecords with a DataFrame view."""

    records: list[CommandRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def start(self, command: str, arguments: dict) -> CommandRecord:
        record = CommandRecord(time.time(), command, dict(arguments))
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
        entry, started = self.start(command, arguments), time.monotonic()
        try:
            result = call()
        except Error as error:
            History.finish(entry, started, error=str(error))
            raise
        History.finish(entry, started, result=result)
        return result

    def frame(self) -> pd.DataFrame:
        with self._lock:
            rows = [vars(r).copy() for r in self.records]
        frame = pd.DataFrame(rows, columns=["time", "command", "arguments", "duration_s", "outcome", "result", "error"])
        frame["time"] = pd.to_datetime(frame["time"], unit="s")
        return frame
