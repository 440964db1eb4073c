"""A readable builder for QMP ``transaction``: each function returns one action; ``run`` sends them all at once.

A transaction happens entirely or not at all, which is what makes a backup
and the bitmap that tracks changes after it start at the same instant::

    >>> bitmap_add("node-A", "bitmap0", persistent=True)
    {'type': 'block-dirty-bitmap-add', 'data': {'node': 'node-A', 'name': 'bitmap0', 'persistent': True}}
    >>> blockdev_backup("node-A", "backup0", sync="full", job_id="job0")
    {'type': 'blockdev-backup', 'data': {'device': 'node-A', 'target': 'backup0', 'sync': 'full', 'job-id': 'job0'}}

``run(vm, [...])`` returns the Jobs that the backup actions started, already
followed like any other job (``job.wait()``, ``job.timeline``).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from qblocknb.errors import InputError
from qblocknb.model.vocabulary import JOB_COMMANDS

if TYPE_CHECKING:
    from qblocknb.live.jobs import Job
    from qblocknb.live.machine import Machine

Action = dict[str, Any]
COMPLETION_MODES = ("individual", "grouped")


def action(kind: str, **data: Any) -> Action:
    """Any transaction action; keyword names use ``_`` for ``-`` and ``None`` leaves an argument out."""
    return {"type": kind, "data": {key.replace("_", "-"): value for key, value in data.items() if value is not None}}


def bitmap_add(
    node: str, name: str, granularity: int | None = None, persistent: bool | None = None, disabled: bool | None = None
) -> Action:
    """Start recording which clusters of ``node`` change (``persistent`` keeps it in the qcow2 file)."""
    return action(
        "block-dirty-bitmap-add",
        node=node,
        name=name,
        granularity=granularity,
        persistent=persistent,
        disabled=disabled,
    )


def bitmap_remove(node: str, name: str) -> Action:
    return action("block-dirty-bitmap-remove", node=node, name=name)


def bitmap_clear(node: str, name: str) -> Action:
    """Forget what the bitmap recorded; it keeps recording from now on."""
    return action("block-dirty-bitmap-clear", node=node, name=name)


def bitmap_enable(node: str, name: str) -> Action:
    return action("block-dirty-bitmap-enable", node=node, name=name)


def bitmap_disable(node: str, name: str) -> Action:
    """Stop recording; what was recorded stays."""
    return action("block-dirty-bitmap-disable", node=node, name=name)


def bitmap_merge(node: str, target: str, bitmaps: list[str | dict]) -> Action:
    """Add the changes recorded in ``bitmaps`` (names on ``node``, or ``{"node", "name"}``) into ``target``."""
    return action("block-dirty-bitmap-merge", node=node, target=target, bitmaps=list(bitmaps))


def blockdev_backup(
    device: str,
    target: str,
    sync: str,
    job_id: str | None = None,
    bitmap: str | None = None,
    bitmap_mode: str | None = None,
    **extra: Any,
) -> Action:
    """A backup of ``device`` into the node ``target``; ``sync="incremental"`` copies what ``bitmap`` recorded."""
    return action(
        "blockdev-backup",
        device=device,
        target=target,
        sync=sync,
        job_id=job_id,
        bitmap=bitmap,
        bitmap_mode=bitmap_mode,
        **extra,
    )


def blockdev_snapshot_sync(node_name: str, snapshot_file: str, snapshot_node_name: str, fmt: str = "qcow2") -> Action:
    """An external snapshot, e.g. of several disks at the same instant."""
    return action(
        "blockdev-snapshot-sync",
        node_name=node_name,
        snapshot_file=snapshot_file,
        snapshot_node_name=snapshot_node_name,
        format=fmt,
    )


def run(vm: Machine, actions: list[Action], completion_mode: str | None = None) -> list[Job]:
    """Send ``actions`` as one ``transaction``; return the Jobs its backup actions started.

    ``completion_mode="grouped"`` makes the backup jobs succeed or fail together; QEMU accepts it only when
    every action is a backup.
    """
    if not actions:
        raise InputError("a transaction needs at least one action", "the list is empty", "build them with qb.actions")
    if completion_mode is not None and completion_mode not in COMPLETION_MODES:
        raise InputError(
            f"completion mode '{completion_mode}' is not known", f"modes are {', '.join(COMPLETION_MODES)}", ""
        )
    sent = copy.deepcopy(actions)
    jobs: list[Job] = []
    try:
        for entry in sent:
            if entry.get("type") in JOB_COMMANDS:
                jobs.append(vm.expect_job(entry["type"], entry.setdefault("data", {})))
        properties = {"properties": {"completion-mode": completion_mode}} if completion_mode else {}
        vm.execute("transaction", {"actions": sent, **properties})
    except Exception:
        for job in jobs:
            vm.forget_job(job)
        raise
    return jobs
