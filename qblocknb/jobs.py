"""A block job followed through QEMU's event stream, with its verbs and its frames.

A ``Job`` learns its status from ``JOB_STATUS_CHANGE`` events (delivered on the
session's thread) and from periodic ``query-block-jobs`` samples; callers in
the notebook block on ``wait()`` / ``wait_ready()``.  Verbs are refused with a
sentence in the states where QEMU would refuse them, before anything is sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pandas as pd

from .chain import Chain, JobInfo, RetiredImage
from .errors import Error, JobError, Timeout
from .listeners import Listeners
from .predict import predict
from .sizes import parse_size
from .vocabulary import ENDED, JOB_COMMANDS, VERB_STATES

if TYPE_CHECKING:
    from .machine import Machine

HINTS = {
    "complete": "complete is accepted only once the job is ready; wait with job.wait_ready()",
    "finalize": "finalize is accepted only in 'pending', for jobs started with auto_finalize=False",
    "dismiss": "dismiss is accepted only in 'concluded', for jobs started with auto_dismiss=False",
}
READY_CHOICES = {
    "mirror": "call job.complete() to pivot the device to the target, or job.cancel() to keep a point-in-time copy",
    "commit": "call job.complete() to pivot the device to the base, or job.cancel() to leave the chain as it was",
}
TIMELINE_COLUMNS = ["t", "status", "offset", "len", "speed", "busy", "paused", "ready", "io-status"]
EVENT_COLUMNS = ["time", "event", "status", "offset", "len", "speed", "error", "data"]
POLL = 0.2
SETTLE_TIMEOUT = 5.0  # how long pause and resume wait for QEMU to report the new status
IDLE_ROW_GAP = 1.0  # seconds between unchanged timeline rows of a job that sits still
IDLE_STATUSES = {"ready", "standby", "paused"}


def _same_state(row: dict, other: dict) -> bool:
    """Two timeline rows that differ in nothing but their time."""
    return all(row[column] == other[column] for column in TIMELINE_COLUMNS[1:])


def event_time(event: dict) -> float:
    """QEMU's own timestamp of an event, in seconds since the epoch."""
    stamp = event.get("timestamp", {})
    return stamp.get("seconds", 0) + stamp.get("microseconds", 0) / 1e6


class Job:
    """One QEMU block job: status, progress, events, timeline and verbs."""

    def __init__(
        self,
        machine: Machine,
        job_id: str,
        command: str,
        arguments: dict,
        chain_before: Chain | None,
        source: str | None = None,
        target: str | None = None,
    ) -> None:
        self.machine = machine
        self.id = job_id
        self.command = command
        self.type = JOB_COMMANDS.get(command, command)
        self.arguments = dict(arguments)
        self.chain_before = chain_before
        self.source, self.target = source, target
        self.status = "created"
        self.ready = False
        self.outcome: str | None = None  # "completed", "cancelled" or "failed"
        self.error: str | None = None
        self.io_error: str | None = None
        self.offset = 0
        self.length = 0
        self.speed = int(arguments.get("speed", 0) or 0)
        self.started = time.monotonic()
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.listeners = Listeners()  # called with this Job after each change, on the event thread
        self.user_paused = False
        self.pivot_requested = False  # complete was sent: a mirror or active commit ends by pivoting
        self._ending_requested = False
        self._finalize_expected = arguments.get("auto-finalize", True) is False
        self._events: list[dict] = []
        self._samples: list[dict] = []
        self._cond = threading.Condition()

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.type} {self.status} {self.progress:.0%}>"

    # -- state ------------------------------------------------------------------------------
    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def progress(self) -> float:
        """Fraction done, 0..1 (1 once ended without error)."""
        if self.ended and self.outcome == "completed":
            return 1.0
        return self.offset / self.length if self.length else 0.0

    def info(self) -> JobInfo:
        """This job as the chain diagram shows it."""
        return JobInfo(self.id, self.type, self.status, self.offset, self.length, self.source, self.target)

    # -- event thread -----------------------------------------------------------------------
    def handle_event(self, event: dict) -> None:
        """Update from one QMP event; runs on the session's thread."""
        name, data = event["event"], event.get("data", {})
        with self._cond:
            self._events.append(
                {
                    "time": pd.Timestamp(event_time(event), unit="s"),
                    "event": name,
                    "status": data.get("status"),
                    "offset": data.get("offset"),
                    "len": data.get("len"),
                    "speed": data.get("speed"),
                    "error": data.get("error"),
                    "data": data,
                }
            )
            self._progress_from(data)
            if name == "JOB_STATUS_CHANGE":
                self.status = data["status"]
                if self.status == "ready":
                    self.ready = True
            elif name == "BLOCK_JOB_READY":
                self.ready = True
            elif name == "BLOCK_JOB_COMPLETED":
                self.error = data.get("error")
                self.outcome = "failed" if self.error else "completed"
            elif name == "BLOCK_JOB_CANCELLED":
                self.outcome = "cancelled"
            elif name == "BLOCK_JOB_ERROR":
                self.io_error = f"{data.get('operation')} error, action {data.get('action')}"
            if self.ended and self.ended_at is None:
                self.ended_at = time.monotonic()
                self.outcome = self.outcome or "completed"
                self._samples.append(
                    self._row(
                        self.ended_at,
                        {
                            "status": self.status,
                            "offset": self.offset,
                            "len": self.length,
                            "speed": self.speed,
                            "busy": False,
                            "paused": False,
                            "ready": self.ready,
                            "io-status": "ok",
                        },
                    )
                )
            self._cond.notify_all()
        self._notify()

    def handle_sample(self, info: dict, at: float) -> None:
        """Record one ``query-block-jobs`` entry taken at monotonic time ``at``.

        Two threads sample (the monitor and ``vm.chain()``); a sample older than the last row is dropped so the
        timeline stays in time order. A job that sits still (READY and idle, paused) adds at most one unchanged row
        a second, so an hour in READY stays a few thousand rows, not 180,000.
        """
        with self._cond:
            last = self._samples[-1] if self._samples else None
            if self.ended or (last and at - self.started < last["t"]):
                return
            row = self._row(at, info)
            idle = last is not None and row["status"] in IDLE_STATUSES and _same_state(row, last)
            if idle and row["t"] - last["t"] < IDLE_ROW_GAP:
                return
            self._progress_from(info)
            self.speed = info.get("speed", self.speed)
            self._samples.append(row)
        self._notify()

    def _progress_from(self, data: dict) -> None:
        if "offset" in data:
            self.offset = max(self.offset, int(data["offset"]))
        if "len" in data:
            self.length = int(data["len"])

    def _row(self, at: float, info: dict) -> dict:
        return {
            "t": at - self.started,
            "status": info.get("status", self.status),
            "offset": info.get("offset"),
            "len": info.get("len"),
            "speed": info.get("speed"),
            "busy": info.get("busy"),
            "paused": info.get("paused"),
            "ready": info.get("ready"),
            "io-status": info.get("io-status"),
        }

    def _notify(self) -> None:
        self.listeners.notify(self)

    # -- frames -----------------------------------------------------------------------------
    @property
    def events(self) -> pd.DataFrame:
        """Every event of this job, with QEMU's timestamps."""
        with self._cond:
            return pd.DataFrame(list(self._events), columns=EVENT_COLUMNS)

    @property
    def timeline(self) -> pd.DataFrame:
        """Progress samples: seconds since start, status, offset, len, speed, busy, paused, ready, io-status."""
        with self._cond:
            return pd.DataFrame(list(self._samples), columns=TIMELINE_COLUMNS)

    def summary(self) -> dict:
        """One row for ``vm.jobs``."""
        end = self.ended_at
        duration = (end - self.started) if end else time.monotonic() - self.started
        return {
            "id": self.id,
            "type": self.type,
            "command": self.command,
            "status": self.status,
            "outcome": self.outcome,
            "start": pd.Timestamp(self.started_at, unit="s"),
            "end": pd.Timestamp(self.started_at + (end - self.started), unit="s") if end else pd.NaT,
            "duration_s": duration,
            "bytes": self.offset,
            "mean_rate_Bps": self.offset / duration if duration else 0.0,
            "error": self.error,
        }

    # -- waiting ----------------------------------------------------------------------------
    def left_chain(self) -> tuple[RetiredImage, ...]:
        """The images this job took out of the chain, with the seed's rule; worked out from its start and end.

        Only a job that completed removes images; a mirror or an active commit does so only when it pivoted
        (``complete``), not when it was cancelled after READY (which QEMU also reports as completed).
        """
        if self.outcome != "completed" or self.chain_before is None or self.type == "backup":
            return ()
        pivots = self.type == "mirror" or (
            self.type == "commit"
            and (self.arguments.get("top-node") or self.arguments.get("top"))
            in (
                None,
                self.chain_before.active.node_name,
                self.chain_before.active.file,
            )
        )
        if pivots and not self.pivot_requested:
            return ()
        try:
            after = predict(self.chain_before, self.command, self.arguments).after
        except Error:  # arguments QEMU took but the model cannot follow: leave the list as it is
            return ()
        earlier = {image.file for image in self.chain_before.retired}
        return tuple(image for image in after.retired if image.file not in earlier)

    def wait(self, timeout: float | None = None) -> Job:
        """Block until the job has ended; raise JobError if it failed or can only go on with your help.

        A ``blockdev-backup`` or ``blockdev-mirror`` target stays open in QEMU after the job, with qcow2
        metadata that may still sit in QEMU's cache: its node is flushed here, so that ``qemu-img`` and
        ``qemu-io -U`` read on disk what the job wrote (``drive-*`` targets are closed, and so flushed, by QEMU).
        """
        self._wait_until(lambda: self.ended, timeout, "end")
        if self.outcome == "failed":
            raise JobError(
                f"job '{self.id}' ({self.command}) failed",
                self.error or "QEMU reported an error",
                "see job.events for the whole story",
            )
        if self.command in ("blockdev-backup", "blockdev-mirror") and self.target and self.machine.alive():
            self.machine.flush_node(self.target)
        return self

    def wait_ready(self, timeout: float | None = None) -> Job:
        """Block until the job is READY (mirror, active commit)."""
        self._wait_until(lambda: self.ready, timeout, "become ready", waiting_for_ready=True)
        return self

    def _wait_until(
        self, done: Callable[[], bool], timeout: float | None, goal: str, waiting_for_ready: bool = False
    ) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not done():
                if self.ended:
                    if waiting_for_ready:
                        raise JobError(
                            f"job '{self.id}' ({self.command}) ended without becoming ready",
                            self.error or f"it ended as {self.outcome}",
                            "only mirror and active commit become ready; use job.wait() for the others",
                        )
                    break
                self._refuse_stuck_wait(goal, waiting_for_ready)
                gone = self.machine.gone_error(f"waiting for job '{self.id}' to {goal}")
                if gone is not None:
                    raise gone
                remaining = POLL if deadline is None else min(POLL, deadline - time.monotonic())
                if remaining <= 0:
                    raise Timeout(
                        f"job '{self.id}' did not {goal} within {timeout} s",
                        f"it is {self.status} at {self.progress:.0%}",
                        "wait longer, raise its speed with job.set_speed(), or cancel it",
                    )
                self._cond.wait(remaining)

    def _refuse_stuck_wait(self, goal: str, waiting_for_ready: bool) -> None:
        """Waiting would last forever when the job needs a verb from the user."""
        if self.status == "ready" and not waiting_for_ready and not self._ending_requested:
            raise JobError(
                f"job '{self.id}' is ready and will not {goal} by itself",
                "mirror and active commit wait for your decision",
                READY_CHOICES.get(self.type, "call job.complete() or job.cancel()"),
            )
        if self.status in ("paused", "standby") and self.user_paused and not self._ending_requested:
            raise JobError(f"job '{self.id}' is paused and will not {goal}", "you paused it", "call job.resume()")
        if self.status == "paused" and self.io_error:
            raise JobError(
                f"job '{self.id}' stopped on an I/O error and will not {goal}",
                self.io_error,
                "fix the cause and call job.resume(), or job.cancel(force=True)",
            )
        if self.status == "pending" and self._finalize_expected:
            raise JobError(
                f"job '{self.id}' is pending and will not {goal}",
                "it was started with auto-finalize off",
                "call job.finalize()",
            )

    # -- verbs ------------------------------------------------------------------------------
    def send_verb(self, verb: str, command: str, arguments: dict, timeout: float | None = None) -> object:
        """Send a job verb if QEMU would accept it now, keeping this Job's view of it; QEMU's answer.

        ``vm.shell("block-job-complete device=job0")`` comes here too, so typed and called verbs agree.
        """
        if self.status not in VERB_STATES[verb] and self.ended:
            raise JobError(
                f"cannot {verb} job '{self.id}'",
                f"it has already ended ({self.outcome})",
                "look at job.events to see how, or start a new job",
            )
        if self.status not in VERB_STATES[verb]:
            accepted = ", ".join(sorted(VERB_STATES[verb]))
            raise JobError(
                f"cannot {verb} job '{self.id}' while it is {self.status}",
                f"QEMU accepts {verb} only when the job is {accepted}",
                HINTS.get(verb, ""),
            )
        if verb == "resume" and not self.user_paused and not self.io_error:
            raise JobError(f"cannot resume job '{self.id}'", "it was not paused", "pause it first with job.pause()")
        ending = verb in ("complete", "cancel", "finalize")
        if ending:  # set before sending: the job may end before QEMU's answer arrives
            self._ending_requested = True
            self.pivot_requested = self.pivot_requested or verb == "complete"
        try:
            result = self.machine.send(command, arguments, timeout)
        except Exception:
            if ending:
                self._ending_requested = False
                self.pivot_requested = False
            raise
        if verb == "pause":
            self.user_paused = True
            self._settle(lambda: self.status in ("paused", "standby"))
        elif verb == "resume":
            self.user_paused, self.io_error = False, None
            self._settle(lambda: self.status not in ("paused", "standby"))  # so resume().complete() finds it ready
        elif verb == "set-speed":
            self.speed = int(arguments["speed"])
        return result

    def _settle(self, reached: Callable[[], bool]) -> None:
        """Give QEMU's status event a moment to arrive, so the next verb sees the state this one made."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        with self._cond:
            while not (reached() or self.ended) and time.monotonic() < deadline:
                self._cond.wait(min(POLL, max(deadline - time.monotonic(), 0)))

    def complete(self) -> Job:
        """Pivot a READY mirror or active commit (``block-job-complete``; ``job-complete`` where that is deprecated)."""
        self._send_modern("complete")
        return self

    def cancel(self, force: bool = False) -> Job:
        """``block-job-cancel``; after READY a mirror ends COMPLETED with a point-in-time copy."""
        self.send_verb("cancel", "block-job-cancel", {"device": self.id, **({"force": True} if force else {})})
        return self

    def pause(self) -> Job:
        self._send_modern("pause")
        return self

    def resume(self) -> Job:
        self._send_modern("resume")
        return self

    def set_speed(self, bytes_per_s: int | str) -> Job:
        """Throttle (or with 0, unthrottle) the job."""
        self.send_verb("set-speed", "block-job-set-speed", {"device": self.id, "speed": parse_size(bytes_per_s)})
        return self

    def finalize(self) -> Job:
        self._send_modern("finalize")
        return self

    def dismiss(self) -> Job:
        self._send_modern("dismiss")
        return self

    def _send_modern(self, verb: str) -> None:
        """The seed's ``block-job-VERB``, unless this QEMU marks it deprecated (10.1+): then ``job-VERB``.

        Cancel is left alone: ``block-job-cancel`` after READY (a point-in-time copy) is not what ``job-cancel`` does.
        """
        old, new = f"block-job-{verb}", f"job-{verb}"
        if self.machine.deprecated(old) and self.machine.has_command(new):
            self.send_verb(verb, new, {"id": self.id})
        else:
            self.send_verb(verb, old, {"id" if verb in ("finalize", "dismiss") else "device": self.id})
