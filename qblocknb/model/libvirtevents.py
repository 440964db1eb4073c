"""libvirt's block-job events retold as the QMP events a ``Job`` follows.

libvirt says little about a job: that it exists (``blockJobInfo``: type, cur, end, bandwidth), that it is
READY, and how it ended (``BLOCK_JOB_2``: completed, failed or cancelled).  QEMU says more, and the rest of
qblocknb (``Job``, its frames, the diagram, the retired images) reads QEMU's words.  ``NativeJob`` keeps what
libvirt said, and the functions here retell it in QEMU's order, as QEMU would have sent it, so that a Job over
libvirt ends the same way as a Job over QMP: a mirror or active commit aborted after READY ends
``BLOCK_JOB_COMPLETED`` (QEMU's point-in-time copy), before READY ``BLOCK_JOB_CANCELLED``::

    >>> job = NativeJob("job0", JobType.MIRROR)
    >>> job.sampled(4, 8, 0)
    >>> [e["data"].get("status", e["event"]) for e in started_events(job) + ready_events(job)]
    ['created', 'running', 'ready', 'BLOCK_JOB_READY']
    >>> [e["data"].get("status", e["event"]) for e in ended_events(job, "cancelled", "")]
    ['waiting', 'pending', 'concluded', 'BLOCK_JOB_COMPLETED', 'null']
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from qblocknb.model.vocabulary import JOB_COMMANDS, JobType

JOB_TYPES = dict(JOB_COMMANDS)  # the commands that start a job, and its type


@dataclass
class NativeJob:
    """One block job libvirt runs on a disk: the id qblocknb gave it, and the progress libvirt last reported."""

    id: str
    type: JobType
    offset: int = 0
    length: int = 0
    speed: int = 0
    ready: bool = False
    ending: str = ""  # "pivot" or "abort" once blockJobAbort was sent

    def sampled(self, cur: int, end: int, bandwidth: int) -> None:
        """Take libvirt's cur/end; QEMU's offset only grows, and so does this one."""
        self.offset, self.length, self.speed = max(self.offset, int(cur)), int(end), int(bandwidth)

    def entry(self) -> dict:
        """This job as a ``query-block-jobs`` entry."""
        status = "ready" if self.ready else "running"
        return {
            **self.progress(),
            "busy": not self.ready,
            "paused": False,
            "ready": self.ready,
            "io-status": "ok",
            "status": status,
        }

    def progress(self) -> dict:
        """What QEMU's job events carry: id, type, and progress."""
        return {
            "device": self.id,
            "type": str(self.type),
            "len": self.length,
            "offset": self.offset,
            "speed": self.speed,
        }


def started_events(job: NativeJob) -> list[dict]:
    """What QEMU says when a job starts."""
    return [_status(job, "created"), _status(job, "running")]


def ready_events(job: NativeJob) -> list[dict]:
    """READY: the copy caught up (libvirt's ``VIR_DOMAIN_BLOCK_JOB_READY``)."""
    job.ready = True
    job.offset = max(job.offset, job.length)
    return [_status(job, "ready"), _event("BLOCK_JOB_READY", job.progress())]


def ended_events(job: NativeJob, outcome: str, error: str) -> list[dict]:
    """The end of a job as QEMU tells it; ``outcome`` is libvirt's: completed, failed (saying ``error``) or
    cancelled."""
    if outcome == "completed" or (outcome == "cancelled" and job.ready):
        if outcome == "completed":
            job.offset = max(job.offset, job.length)
        finished = _event("BLOCK_JOB_COMPLETED", job.progress())
        return [*(_status(job, s) for s in ("waiting", "pending", "concluded")), finished, _status(job, "null")]
    if outcome == "failed":
        failed = _event("BLOCK_JOB_COMPLETED", {**job.progress(), "error": error})
        return [_status(job, "aborting"), _status(job, "concluded"), failed, _status(job, "null")]
    cancelled = _event("BLOCK_JOB_CANCELLED", job.progress())
    return [_status(job, "aborting"), _status(job, "concluded"), cancelled, _status(job, "null")]


def _status(job: NativeJob, status: str) -> dict:
    return _event("JOB_STATUS_CHANGE", {"id": job.id, "status": status})


def _event(name: str, data: dict) -> dict:
    now = time.time()
    seconds = int(now)
    return {"event": name, "data": data, "timestamp": {"seconds": seconds, "microseconds": int((now - seconds) * 1e6)}}
