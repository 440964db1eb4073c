"""A block job's state as pure logic: QEMU's events and samples in, status, progress, frames and verdicts out.

``JobState`` does no I/O and knows no clock but the times it is given, so it can be fed recorded event
sequences in a test and answer the same as on a live QEMU::

    >>> state = JobState("job0", "block-stream", {"device": "node-D"}, None, started=100.0)
    >>> for status in ("created", "running", "waiting", "pending", "concluded"):
    ...     state.apply_event({"event": "JOB_STATUS_CHANGE", "data": {"id": "job0", "status": status}}, now=101.0)
    >>> f"{state.status}, {state.outcome}", state.ended_at - state.started
    ('concluded, completed', 1.0)
    >>> print(state.verb_refusal("pause"))
    cannot pause job 'job0': it has already ended (completed); look at job.events to see how, or start a new job.

An I/O error the job meets arrives as ``BLOCK_JOB_ERROR``; under the policy ``stop`` QEMU pauses the job::

    >>> error = {"event": "BLOCK_JOB_ERROR", "data": {"device": "job0", "operation": "write", "action": "stop"}}
    >>> state = JobState("job1", "blockdev-mirror", {"device": "node-D"}, None, started=100.0)
    >>> state.apply_event(error, now=101.0)
    >>> state.apply_event({"event": "JOB_STATUS_CHANGE", "data": {"id": "job1", "status": "paused"}}, now=101.0)
    >>> state.io_error, state.stopped_on_error, state.verb_refusal("resume") is None
    ('write error, stopped', True, True)

``qblocknb.live.jobs.Job`` adds the waiting, the verbs that talk to QEMU and the listeners.
"""

from __future__ import annotations

import time

import pandas as pd

from qblocknb.errors import Error, JobError
from qblocknb.model.chain import Chain, JobInfo, RetiredImage
from qblocknb.model.jobfaults import FaultedJobInfo, Faults
from qblocknb.model.predict import predict
from qblocknb.model.vocabulary import ENDED, JOB_COMMANDS, VERB_STATES, JobStatus, JobType, Outcome

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
EVENT_COLUMNS = ["time", "event", "status", "offset", "len", "speed", "error", "operation", "action", "data"]
IDLE_ROW_GAP = 1.0  # seconds between unchanged timeline rows of a job that sits still
MAX_ROWS = 10_000  # a job's timeline past this is thinned: a day-long job costs what a few minutes do
IDLE_STATUSES = {"ready", "standby", "paused"}


def _same_state(row: dict, other: dict) -> bool:
    """Two timeline rows that differ in nothing but their time."""
    return all(row[column] == other[column] for column in TIMELINE_COLUMNS[1:])


def thinned(rows: list[dict], grain: float) -> list[dict]:
    """One row per ``grain`` seconds, plus the first row, the last and every row where the status changed.

    The timeline is thinned this way, with a coarser grain each time, whenever it reaches ``MAX_ROWS``: the
    whole run stays there at an even grain, and the memory a timeline takes stays bounded.

    >>> rows = [{"t": t, "status": "running" if t < 5 else "ready"} for t in range(8)]
    >>> [row["t"] for row in thinned(rows, grain=2.0)]
    [0, 2, 4, 5, 6, 7]
    """
    kept = rows[:1]
    for row in rows[1:-1]:
        if row["status"] != kept[-1]["status"] or row["t"] // grain != kept[-1]["t"] // grain:
            kept.append(row)
    return kept + rows[-1:] if len(rows) > 1 else kept


def event_time(event: dict) -> float:
    """QEMU's own timestamp of an event, in seconds since the epoch."""
    stamp = event.get("timestamp", {})
    return stamp.get("seconds", 0) + stamp.get("microseconds", 0) / 1e6


class JobState(Faults):
    """What is known of one QEMU block job: status, progress, outcome, every event and every sample."""

    def __init__(
        self,
        job_id: str,
        command: str,
        arguments: dict,
        chain_before: Chain | None,
        source: str | None = None,
        target: str | None = None,
        started: float | None = None,
    ) -> None:
        self.id = job_id
        self.command = command
        self.type = JOB_COMMANDS.get(command, command)
        self.arguments = dict(arguments)
        self.chain_before = chain_before
        self.source, self.target = source, target
        self.status: JobStatus | str = JobStatus.CREATED
        self.ready = False
        self.outcome: Outcome | None = None
        self.error: str | None = None
        self.last_fault: dict | None = None  # the data of the last BLOCK_JOB_ERROR (operation, action), until a resume
        self.io_status = "ok"  # query-block-jobs' io-status: ok, failed or nospace (set by a stop, reset by resume)
        self.offset = 0
        self.length = 0
        self.speed = int(arguments.get("speed", 0) or 0)
        self.started = time.monotonic() if started is None else started
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.user_paused = False
        self.pivot_requested = False  # complete was sent: a mirror or active commit ends by pivoting
        self.ending_requested = False
        self.finalize_expected = arguments.get("auto-finalize", True) is False
        self._events: list[dict] = []
        self._samples: list[dict] = []
        self._grain = 0.02  # seconds per timeline row once thinned; doubles when thinning at it is not enough

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.type} {self.status} {self.progress:.0%}>"

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def progress(self) -> float:
        """Fraction done, 0..1 (1 once ended without error, or READY with nothing left to copy)."""
        if (self.ended and self.outcome == Outcome.COMPLETED) or (self.ready and self.offset >= self.length):
            return 1.0
        return self.offset / self.length if self.length else 0.0

    def info(self) -> JobInfo:
        """This job as the chain diagram shows it, with the I/O error it met."""
        ends = (self.offset, self.length, self.source, self.target)
        return FaultedJobInfo(self.id, self.type, self.status, *ends, fault=self.io_error)

    # -- input ------------------------------------------------------------------------------
    def apply_event(self, event: dict, now: float) -> None:
        """Take one QMP event for this job, received at monotonic time ``now``."""
        name, data = event["event"], event.get("data", {})
        self._events.append(
            {
                "time": pd.Timestamp(event_time(event), unit="s"),
                "event": name,
                "status": data.get("status"),
                "offset": data.get("offset"),
                "len": data.get("len"),
                "speed": data.get("speed"),
                "error": data.get("error"),
                "operation": data.get("operation"),
                "action": data.get("action"),
                "data": data,
            }
        )
        self._progress_from(data)
        if name == "JOB_STATUS_CHANGE":
            self.status = JobStatus.of(data["status"])
            self.ready = self.ready or self.status == JobStatus.READY
            if self.status == JobStatus.ABORTING and self.outcome is None:  # all a create job says of its end
                self.outcome = Outcome.CANCELLED if self.ending_requested else Outcome.FAILED
                if self.outcome == Outcome.FAILED and self.type == JobType.CREATE:
                    self.error = "QEMU aborted it and, dismissing it at once, kept no reason: check its options"
        elif name == "BLOCK_JOB_READY":
            self.ready = True
        elif name == "BLOCK_JOB_COMPLETED":
            self.error = data.get("error")
            self.outcome = Outcome.FAILED if self.error else Outcome.COMPLETED
        elif name == "BLOCK_JOB_CANCELLED":
            self.outcome = Outcome.CANCELLED
        elif name == "BLOCK_JOB_ERROR":
            self.last_fault = data
        if self.ended and self.ended_at is None:
            self.ended_at = now
            self.outcome = self.outcome or Outcome.COMPLETED
            last = {"status": self.status, "offset": self.offset, "len": self.length, "speed": self.speed}
            self._samples.append(self._row(now, {**last, "busy": False, "paused": False, "ready": self.ready}))
            self._samples[-1]["io-status"] = "ok"

    def apply_sample(self, info: dict, at: float) -> bool:
        """Take one ``query-block-jobs`` entry sampled at monotonic time ``at``; False when it adds nothing.

        Two threads sample (the monitor and ``vm.chain()``); a sample older than the last row is dropped so the
        timeline stays in time order. A job that sits still (READY and idle, paused) adds at most one unchanged row
        a second, so an hour in READY stays a few thousand rows, not 180,000.
        """
        last = self._samples[-1] if self._samples else None
        if self.ended or (last and at - self.started < last["t"]):
            return False
        row = self._row(at, info)
        idle = last is not None and row["status"] in IDLE_STATUSES and _same_state(row, last)
        if idle and row["t"] - last["t"] < IDLE_ROW_GAP:
            return False
        self._progress_from(info)
        self.speed = info.get("speed", self.speed)
        self.io_status = info.get("io-status", self.io_status)
        self._samples.append(row)
        if len(self._samples) > MAX_ROWS:  # thin to half, at the finest grain that gets there
            self._samples = thinned(self._samples, self._grain)
            while len(self._samples) > MAX_ROWS // 2:
                self._grain *= 2
                self._samples = thinned(self._samples, self._grain)
        return True

    def _progress_from(self, data: dict) -> None:
        if "offset" in data:
            self.offset = max(self.offset, int(data["offset"]))
        if "len" in data:
            self.length = int(data["len"])

    def _row(self, at: float, info: dict) -> dict:
        return {
            "t": at - self.started,
            "status": info.get("status", self.status),
            **{column: info.get(column) for column in TIMELINE_COLUMNS[2:]},
        }

    # -- frames -----------------------------------------------------------------------------
    @property
    def events(self) -> pd.DataFrame:
        """Every event of this job, with QEMU's timestamps."""
        return pd.DataFrame(list(self._events), columns=EVENT_COLUMNS)

    @property
    def timeline(self) -> pd.DataFrame:
        """Progress samples: seconds since start, status, offset, len, speed, busy, paused, ready, io-status."""
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

    def left_chain(self) -> tuple[RetiredImage, ...]:
        """The images this job took out of the chain, with the seed's rule; worked out from its start and end.

        Only a job that completed removes images; a mirror or an active commit does so only when it pivoted
        (``complete``), not when it was cancelled after READY (which QEMU also reports as completed).
        """
        if self.outcome != Outcome.COMPLETED or self.chain_before is None or self.type == JobType.BACKUP:
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

    def writes_into(self) -> str | None:
        """The file a commit writes into (its base): images retired earlier that read through it stop being
        their points in time, whether the commit completes or not."""
        if self.type != JobType.COMMIT or self.chain_before is None:
            return None
        base = self.arguments.get("base-node") or self.arguments.get("base")
        image = self.chain_before.find(base) if base else self.chain_before.base
        return image.file if image is not None else None

    # -- verdicts ---------------------------------------------------------------------------
    def verb_refusal(self, verb: str) -> JobError | None:
        """Why QEMU would refuse ``verb`` now (its verb table), or None when it would accept it."""
        if self.status not in VERB_STATES[verb] and self.ended:
            return JobError(
                f"cannot {verb} job '{self.id}'",
                f"it has already ended ({self.outcome})",
                "look at job.events to see how, or start a new job",
            )
        if self.status not in VERB_STATES[verb]:
            accepted = ", ".join(sorted(VERB_STATES[verb]))
            return JobError(
                f"cannot {verb} job '{self.id}' while it is {self.status}",
                f"QEMU accepts {verb} only when the job is {accepted}",
                HINTS.get(verb, ""),
            )
        if self.fault_refusal(verb) is not None:
            return self.fault_refusal(verb)
        if verb == "pause" and self.user_paused:  # QEMU: "Job is already paused"
            return JobError(f"cannot pause job '{self.id}'", "it is already paused", "call job.resume() to go on")
        if verb == "resume" and not (self.user_paused or self.stopped_on_error):
            return JobError(f"cannot resume job '{self.id}'", "it was not paused", "pause it first with job.pause()")
        return None

    def stuck(self, goal: str, waiting_for_ready: bool = False) -> JobError | None:
        """Why waiting for ``goal`` would last forever (the job needs a verb from the user), or None."""
        if self.status == "ready" and not waiting_for_ready and not self.ending_requested:
            return JobError(
                f"job '{self.id}' is ready and will not {goal} by itself",
                "mirror and active commit wait for your decision",
                READY_CHOICES.get(self.type, "call job.complete() or job.cancel()"),
            )
        if self.status in ("paused", "standby") and self.user_paused and not self.ending_requested:
            return JobError(f"job '{self.id}' is paused and will not {goal}", "you paused it", "call job.resume()")
        if self.stopped_on_error and not self.ending_requested:
            return self.paused_on_error(goal)
        if self.status == "pending" and self.finalize_expected:
            return JobError(
                f"job '{self.id}' is pending and will not {goal}",
                "it was started with auto-finalize off",
                "call job.finalize()",
            )
        return None
