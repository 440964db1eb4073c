"""QEMU's block-job vocabulary as tables: which commands start which jobs, and which verbs each status accepts.

Plain data, shared by the checks, the predictions, the Job and the views, so that none of them has to import
another to learn a name::

    >>> JOB_COMMANDS["drive-mirror"], sorted(map(str, VERB_STATES["complete"]))
    (<JobType.MIRROR: 'mirror'>, ['ready'])
    >>> JobStatus.of("ready") == "ready", f"{JobStatus.READY}", JobStatus.of("a status from a newer QEMU")
    (True, 'ready', 'a status from a newer QEMU')
"""

from __future__ import annotations

from enum import Enum


class Name(str, Enum):
    """A QMP name as a typed value that still compares, prints and serialises as the plain string."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def of(cls, value: str) -> Name | str:
        """The member for ``value``; a name this table does not know yet (a newer QEMU's) stays a string."""
        try:
            return cls(value)
        except ValueError:
            return value


class JobStatus(Name):
    """QEMU's job lifecycle (``JobStatus`` in qapi/job.json)."""

    UNDEFINED = "undefined"
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    READY = "ready"
    STANDBY = "standby"
    WAITING = "waiting"
    PENDING = "pending"
    ABORTING = "aborting"
    CONCLUDED = "concluded"
    NULL = "null"


class JobType(Name):
    STREAM = "stream"
    COMMIT = "commit"
    MIRROR = "mirror"
    BACKUP = "backup"
    CREATE = "create"  # blockdev-create: a job, but no block job (query-jobs and job-* verbs only)


class Outcome(Name):
    """How a job ended, as its events tell: ``BLOCK_JOB_COMPLETED`` with or without an error, or cancelled."""

    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


JOB_COMMANDS = {
    "block-stream": JobType.STREAM,
    "block-commit": JobType.COMMIT,
    "drive-mirror": JobType.MIRROR,
    "blockdev-mirror": JobType.MIRROR,
    "drive-backup": JobType.BACKUP,
    "blockdev-backup": JobType.BACKUP,
    "blockdev-create": JobType.CREATE,
}
ENDED = {JobStatus.CONCLUDED, JobStatus.NULL}
_ACTIVE = {JobStatus.CREATED, JobStatus.RUNNING, JobStatus.PAUSED, JobStatus.READY, JobStatus.STANDBY}
# QEMU's own verb table (job.c): the statuses in which each verb is accepted.
VERB_STATES = {
    "cancel": _ACTIVE | {JobStatus.WAITING, JobStatus.PENDING, JobStatus.ABORTING},
    "pause": _ACTIVE,
    "resume": _ACTIVE,
    "set-speed": _ACTIVE,
    "complete": {JobStatus.READY},
    "finalize": {JobStatus.PENDING},
    "dismiss": {JobStatus.CONCLUDED},
}
# Job verbs as QMP commands, so a verb typed as a command goes through the Job's state rules.
VERB_COMMANDS = {
    f"{prefix}-{verb}": verb
    for prefix in ("block-job", "job")
    for verb in ("complete", "cancel", "pause", "resume", "finalize", "dismiss")
} | {"block-job-set-speed": "set-speed"}
