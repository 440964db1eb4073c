"""The arguments of the seed's commands that every QEMU the toolkit supports (7.2 and later) accepts.

A pre-flight check of argument names needs QEMU's whole ``query-qmp-schema`` only for a name outside this
table: reading that schema costs tens of milliseconds and megabytes per QEMU, more than the seed's workflow
itself.  The table was read from QEMU 7.2's schema (the oldest supported) and holds only names that later
versions keep; an argument outside it is still checked, against the QEMU's own schema::

    >>> {"device", "job-id", "base-node"} <= STABLE_ARGUMENTS["block-stream"]
    True
"""

from __future__ import annotations

JOB_OPTIONS = {"job-id", "device", "speed", "auto-finalize", "auto-dismiss", "filter-node-name"}
COPY_OPTIONS = {*JOB_OPTIONS, "target", "sync", "on-source-error", "on-target-error"}
STABLE_ARGUMENTS: dict[str, frozenset[str]] = {
    "blockdev-snapshot-sync": frozenset(
        {"device", "node-name", "snapshot-file", "snapshot-node-name", "format", "mode"}
    ),
    "block-stream": frozenset({*JOB_OPTIONS, "base", "base-node", "backing-file", "on-error"}),
    "block-commit": frozenset({*JOB_OPTIONS, "base", "base-node", "top", "top-node", "backing-file", "on-error"}),
    "drive-mirror": frozenset(
        {*COPY_OPTIONS, "format", "mode", "node-name", "replaces", "granularity", "buf-size", "copy-mode"}
    ),
    "blockdev-mirror": frozenset({*COPY_OPTIONS, "replaces", "granularity", "buf-size", "copy-mode"}),  # 3.0+
    "drive-backup": frozenset({*COPY_OPTIONS, "format", "mode", "bitmap", "bitmap-mode", "compress"}),
    "blockdev-backup": frozenset({*COPY_OPTIONS, "bitmap", "bitmap-mode", "compress"}),
    "block-job-cancel": frozenset({"device", "force"}),
    "block-job-set-speed": frozenset({"device", "speed"}),
    **{f"block-job-{verb}": frozenset({"device"}) for verb in ("complete", "pause", "resume")},
    **{f"block-job-{verb}": frozenset({"id"}) for verb in ("finalize", "dismiss")},
    **{f"job-{verb}": frozenset({"id"}) for verb in ("cancel", "complete", "pause", "resume", "finalize", "dismiss")},
}
IMAGE_FORMATS = frozenset({"qcow2", "raw"})  # block drivers every QEMU build has
