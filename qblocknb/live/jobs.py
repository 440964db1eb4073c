"""A block job followed through QEMU's event stream, with its verbs and its waits.

A ``Job`` is a ``JobState`` (pure: events and samples in, status and frames out) that also talks to QEMU:
it learns from ``JOB_STATUS_CHANGE`` events (delivered on the session's thread) and periodic
``query-block-jobs`` samples, lets a notebook cell block on ``wait()`` / ``wait_ready()``, and sends
verbs, refused with a sentence in the states where QEMU would refuse them, before anything is sent.
It is given callables, not a Machine: ``send(command, arguments, timeout=None, record=True)``,
``gone(what) -> Error | None`` (the error to raise when QEMU is gone), and optionally ``deprecated(command)`` and
``has_command(command)`` (what this QEMU's schema says).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from qblocknb.errors import Error, JobError, Timeout
from qblocknb.model import hmp
from qblocknb.model.backlog import Backlog, backlog
from qblocknb.model.chain import Chain
from qblocknb.model.jobstate import EVENT_COLUMNS, TIMELINE_COLUMNS, JobState, event_time
from qblocknb.model.listeners import Listeners
from qblocknb.model.sizes import parse_named_size
from qblocknb.model.vocabulary import JobType, Outcome

POLL = 0.2
SETTLE_TIMEOUT = 5.0  # how long pause and resume wait for QEMU to report the new status
Send = Callable[..., Any]
Gone = Callable[[str], Error | None]

__all__ = ["EVENT_COLUMNS", "TIMELINE_COLUMNS", "Job", "event_time"]


class Job(JobState):
    """One QEMU block job: its state, plus waits, verbs and listeners."""

    def __init__(
        self,
        job_id: str,
        command: str,
        arguments: dict,
        chain_before: Chain | None,
        source: str | None = None,
        target: str | None = None,
        *,
        send: Send,
        gone: Gone,
        deprecated: Callable[[str], bool] = lambda command: False,
        has_command: Callable[[str], bool] = lambda command: False,
    ) -> None:
        super().__init__(job_id, command, arguments, chain_before, source, target)
        self._send, self._gone, self._deprecated, self._has_command = send, gone, deprecated, has_command
        self.listeners = Listeners()  # called with this Job after each change, on the event thread
        self._cond = threading.Condition()

    # -- event thread -----------------------------------------------------------------------
    def handle_event(self, event: dict) -> None:
        """Update from one QMP event; runs on the session's thread."""
        with self._cond:
            self.apply_event(event, time.monotonic())
            self._cond.notify_all()
        self.listeners.notify(self)

    def handle_sample(self, info: dict, at: float) -> None:
        """Record one ``query-block-jobs`` entry taken at monotonic time ``at``."""
        with self._cond:
            added = self.apply_sample(info, at)
        if added:
            self.listeners.notify(self)

    @property
    def events(self) -> pd.DataFrame:
        with self._cond:
            return super().events

    @property
    def timeline(self) -> pd.DataFrame:
        with self._cond:
            return super().timeline

    @property
    def backlog(self) -> Backlog | None:
        """What is left to copy (``len - offset``) and whether it shrinks: see ``qblocknb.model.backlog``."""
        return backlog(self.timeline)

    def gone(self) -> bool:
        """Whether this job's QEMU is gone (dead, or its connection closed): nothing more will happen to it."""
        return self._gone("follow the job") is not None

    # -- waiting ----------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> Job:
        """Block until the job has ended; raise JobError if it failed or can only go on with your help.

        A ``blockdev-backup`` or ``blockdev-mirror`` target stays open in QEMU after the job, with qcow2
        metadata that may still sit in QEMU's cache: its node is flushed here, so that ``qemu-img`` and
        ``qemu-io -U`` read on disk what the job wrote (``drive-*`` targets are closed, and so flushed, by QEMU).
        """
        self._wait_until(lambda: self.ended, timeout, "end")
        if self.outcome == Outcome.FAILED:
            raise self.failure()
        if self.command in ("blockdev-backup", "blockdev-mirror") and self.target and self._gone("flush") is None:
            self._flush_target()
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
                    if waiting_for_ready and self.outcome == Outcome.FAILED:
                        raise self.failure()
                    if waiting_for_ready:
                        raise JobError(
                            f"job '{self.id}' ({self.command}) ended without becoming ready",
                            self.error or f"it ended as {self.outcome}",
                            "only mirror and active commit become ready; use job.wait() for the others",
                        )
                    break
                stuck = self.stuck(goal, waiting_for_ready)
                if stuck is not None:
                    raise stuck
                gone = self._gone(f"waiting for job '{self.id}' to {goal}")
                if gone is not None:
                    raise gone
                remaining = POLL if deadline is None else min(POLL, deadline - time.monotonic())
                if remaining <= 0:
                    raise Timeout(
                        f"job '{self.id}' did not {goal} within {timeout} s",
                        f"it is {self.status} at {self.progress:.0%}",
                        "wait longer, raise its speed with job.set_speed(), or cancel it; if it does not move at "
                        "all, check that QEMU answers (vm.query_status())",
                    )
                self._cond.wait(remaining)

    def _flush_target(self) -> None:
        """Flush the target node the job leaves open (a node already closed is skipped).

        A QEMU with no HMP (``qemu-storage-daemon``) has no flush to send: it flushes the node when it closes it.
        """
        if not self._has_command("human-monitor-command"):
            return
        nodes = self._send("query-named-block-nodes", {"flat": True}, record=False)
        if self.target in {node["node-name"] for node in nodes}:
            self._send("human-monitor-command", {"command-line": hmp.qemu_io(self.target, "flush")}, record=False)

    # -- verbs ------------------------------------------------------------------------------
    def send_verb(self, verb: str, command: str, arguments: dict, timeout: float | None = None) -> object:
        """Send a job verb if QEMU would accept it now, keeping this Job's view of it; QEMU's answer.

        ``vm.shell("block-job-complete device=job0")`` comes here too, so typed and called verbs agree.
        """
        refusal = self.verb_refusal(verb)
        if refusal is None and verb == "cancel":
            refusal = self.cancel_refusal(bool(arguments.get("force")))
        if refusal is not None:
            raise refusal
        ending = verb in ("complete", "cancel", "finalize")
        if ending:  # set before sending: the job may end before QEMU's answer arrives
            self.ending_requested = True
            self.pivot_requested = self.pivot_requested or verb == "complete"
        try:
            result = self._send(command, arguments, timeout)
        except Exception:
            if ending:
                self.ending_requested = False
                self.pivot_requested = False
            raise
        if verb == "pause":
            self.user_paused = True
            self._settle(lambda: self.status in ("paused", "standby"))
        elif verb == "resume":
            self.resumed()
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
        """``block-job-cancel``; after READY a mirror ends COMPLETED with a point-in-time copy.

        A create job, which no ``block-job-*`` verb reaches, gets ``job-cancel`` (always forced, as it has no READY).
        """
        if self.type == JobType.CREATE:
            self.send_verb("cancel", "job-cancel", {"id": self.id})
        else:
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
        speed = parse_named_size(bytes_per_s, f"job '{self.id}': speed")
        self.send_verb("set-speed", "block-job-set-speed", {"device": self.id, "speed": speed})
        return self

    def change(self, copy_mode: str = "write-blocking") -> Job:
        """Make a running mirror converge: from now on each guest write also reaches the target before it completes
        (``block-job-change``, which QEMU 7.2 lacks: start the mirror with ``copy_mode=`` there)."""
        what = f"job '{self.id}' cannot change its copy mode to '{copy_mode}'"
        if self.type != "mirror" or self.ended:
            raise JobError(what, f"it is {'an ended job' if self.ended else 'a ' + self.type}", "only a running mirror")
        if copy_mode != "write-blocking":
            raise JobError(what, "QEMU changes a mirror only to write-blocking", "use copy_mode='write-blocking'")
        if not self._has_command("block-job-change"):
            raise JobError(
                what,
                "this QEMU has no block-job-change (QEMU 8.2 brought it)",
                "start the mirror with copy_mode='write-blocking' instead, or cancel it and start it again so",
            )
        self._send("block-job-change", {"id": self.id, "type": "mirror", "copy-mode": copy_mode})
        return self

    def finalize(self) -> Job:
        self._send_modern("finalize")
        return self

    def dismiss(self) -> Job:
        self._send_modern("dismiss")
        return self

    def _send_modern(self, verb: str) -> None:
        """The seed's ``block-job-VERB``, unless this QEMU marks it deprecated (10.1+), or the job is no block job
        (``blockdev-create``'s): then ``job-VERB``.

        Cancel is left alone: ``block-job-cancel`` after READY (a point-in-time copy) is not what ``job-cancel`` does
        (a forced cancel: the mirror ends CANCELLED; checked on 7.2 and 11.1), and no QEMU marks it deprecated.
        """
        old, new = f"block-job-{verb}", f"job-{verb}"
        if self._deprecated(old) or self.type == JobType.CREATE:
            self.send_verb(verb, new, {"id": self.id})
        else:
            self.send_verb(verb, old, {"id" if verb in ("finalize", "dismiss") else "device": self.id})
