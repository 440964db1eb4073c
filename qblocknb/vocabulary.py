"""QEMU's block-job vocabulary as tables: which commands start which jobs, and which verbs each status accepts.

Plain data, shared by the checks, the predictions, the Job and the views, so that none of them has to import
another to learn a name::

    >>> JOB_COMMANDS["drive-mirror"], sorted(VERB_STATES["complete"])
    ('mirror', ['ready'])
"""

from __future__ import annotations

JOB_COMMANDS = {
    "block-stream": "stream",
    "block-commit": "commit",
    "drive-mirror": "mirror",
    "blockdev-mirror": "mirror",
    "drive-backup": "backup",
    "blockdev-backup": "backup",
}
ENDED = {"concluded", "null"}
_ACTIVE = {"created", "running", "paused", "ready", "standby"}
# QEMU's own verb table (job.c): the statuses in which each verb is accepted.
VERB_STATES = {
    "cancel": _ACTIVE | {"waiting", "pending", "aborting"},
    "pause": _ACTIVE,
    "resume": _ACTIVE,
    "set-speed": _ACTIVE,
    "complete": {"ready"},
    "finalize": {"pending"},
    "dismiss": {"concluded"},
}
# Job verbs as QMP commands, so a verb typed as a command goes through the Job's state rules.
VERB_COMMANDS = {
    f"{prefix}-{verb}": verb
    for prefix in ("block-job", "job")
    for verb in ("complete", "cancel", "pause", "resume", "finalize", "dismiss")
} | {"block-job-set-speed": "set-speed"}
