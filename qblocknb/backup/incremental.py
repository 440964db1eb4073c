"""The incremental backup cycle: a full backup and a new bitmap at one instant, then incrementals onto it.

Each incremental is a qcow2 file whose backing file is the previous backup, so
the newest file, read through its backing chain, is the disk as it was when
that backup began, and each file holds only the clusters that changed.  A
failed incremental leaves the bitmap as it was (QEMU merges it back), so the
next attempt copies everything since the last good backup::

    cycle = qb.IncrementalBackup(vm)         # on the active node, bitmap 'bitmap0', files backup0.qcow2, ...
    cycle.full()                             # one transaction: block-dirty-bitmap-add + blockdev-backup sync=full
    vm.write("virtio0", "1M", "64k", pattern=0x11)
    cycle.incremental()                      # backup1.qcow2 (backing backup0.qcow2), sync=incremental
    cycle.frame                              # one row per attempt, failed ones included
    lab.compare("a.qcow2", cycle.latest)     # the restored chain reads as the guest did
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from qblocknb.backup import actions, bitmaps
from qblocknb.errors import Error, InputError
from qblocknb.live import images
from qblocknb.model.sizes import human_size
from qblocknb.model.vocabulary import Outcome

if TYPE_CHECKING:
    from qblocknb.live.jobs import Job
    from qblocknb.live.machine import Machine

COLUMNS = [
    "number",
    "kind",
    "file",
    "outcome",
    "detail",
    "dirty_bytes",
    "copied_bytes",
    "stored_bytes",
    "duration_s",
    "job",
]
FAULT = {"event": "write_aio", "errno": 5}  # blkdebug: every data write to the target fails with EIO


@dataclass(frozen=True)
class Backup:
    """One attempt of the cycle."""

    number: int
    kind: str  # "full" or "incremental"
    file: Path
    outcome: Outcome  # completed or failed
    detail: str  # why it failed
    dirty_bytes: int  # what the bitmap had recorded when the attempt began
    stored_bytes: int  # data clusters in this file itself (0 once a failed attempt's file is removed)
    job: Job | None

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.COMPLETED


class IncrementalBackup:
    """Full backup + bitmap in one transaction, then incrementals each onto the previous backup."""

    def __init__(
        self,
        vm: Machine,
        node: str | None = None,
        bitmap: str = "bitmap0",
        folder: str | Path | None = None,
        prefix: str = "backup",
        persistent: bool = False,
        granularity: int | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.vm = vm
        self.node = node or vm.chain().active.node_name
        self.bitmap, self.prefix = bitmap, prefix
        self.folder = Path(folder) if folder else (vm.cwd or Path.cwd())
        self.persistent, self.granularity, self.timeout = persistent, granularity, timeout
        self.attempts: list[Backup] = []

    def __repr__(self) -> str:
        return f"<IncrementalBackup {self.node} bitmap {self.bitmap}: {len(self.backups)} backups>"

    @property
    def backups(self) -> list[Backup]:
        """The good backups, oldest (the full one) first."""
        return [attempt for attempt in self.attempts if attempt.ok]

    @property
    def latest(self) -> Path:
        """The newest good backup: open it (with its backing chain) to restore."""
        if not self.backups:
            raise InputError("there is no backup yet", "full() has not succeeded", "call cycle.full()")
        return self.backups[-1].file

    @property
    def frame(self) -> pd.DataFrame:
        rows = [
            [
                a.number,
                a.kind,
                a.file.name,
                a.outcome,
                a.detail,
                a.dirty_bytes,
                a.job.offset if a.job else 0,
                a.stored_bytes,
                a.job.summary()["duration_s"] if a.job else float("nan"),
                a.job.id if a.job else None,
            ]
            for a in self.attempts
        ]
        return pd.DataFrame(rows, columns=COLUMNS)

    # -- the cycle --------------------------------------------------------------------------
    def full(self, inject_error: dict | None = None) -> Backup:
        """The full backup and the bitmap that records changes after it, in one transaction.

        ``inject_error`` rehearses a failure, as for ``incremental``; the bitmap then goes too, for a clean retry.
        """
        if self.backups:
            raise InputError(
                "this cycle already has its full backup",
                f"{self.backups[0].file.name} was made at its start",
                "call incremental(), or start a new cycle with another bitmap name",
            )
        if self._has_bitmap():
            raise InputError(
                f"node '{self.node}' already has a bitmap '{self.bitmap}'",
                "a new cycle starts its own bitmap at the instant of its full backup",
                f"pick another bitmap= or remove it with qb.bitmaps.remove(vm, '{self.node}', '{self.bitmap}')",
            )
        target = self._target(0, None, inject_error)
        steps = [
            actions.bitmap_add(self.node, self.bitmap, self.granularity, self.persistent or None),
            actions.blockdev_backup(self.node, target, sync="full"),
        ]
        return self._attempt(0, "full", target, lambda: actions.run(self.vm, steps)[0], 0)

    def incremental(self, inject_error: dict | None = None) -> Backup:
        """Copy what the bitmap recorded into a new file on top of the latest backup.

        ``inject_error`` (a blkdebug rule such as ``qb.incremental.FAULT``) makes the target fail, to rehearse
        a failure: the bitmap survives it and the next call retries.
        """
        previous = self.latest
        number = len(self.backups)
        dirty = bitmaps.find(self.vm, self.node, self.bitmap).dirty_bytes
        target = self._target(number, previous, inject_error)
        return self._attempt(
            number, "incremental", target, lambda: bitmaps.backup(self.vm, self.node, target, self.bitmap), dirty
        )

    # -- helpers ----------------------------------------------------------------------------
    def file(self, number: int) -> Path:
        return self.folder / f"{self.prefix}{number}.qcow2"

    def _target(self, number: int, backing: Path | None, inject_error: dict | None) -> str:
        """Create the target file (an overlay of ``backing``) and attach it as node ``<prefix><number>``."""
        path = self.file(number)
        if path.exists():
            raise InputError(
                f"{path.name} already exists", "a backup is never overwritten", "pick another prefix= or folder="
            )
        size = self.vm.chain().active.virtual_size
        # A relative backing name keeps the set of backups movable as one folder.
        images.create(path, size, Path(backing.name) if backing else None, "qcow2", backing_fmt="qcow2")
        protocol: dict = {"driver": "file", "filename": str(path.resolve())}
        if inject_error is not None:
            protocol = {"driver": "blkdebug", "image": protocol, "inject-error": [inject_error]}
        node = f"{self.prefix}{number}"
        self.vm.blockdev_add(driver="qcow2", node_name=node, file=protocol)
        return node

    def _attempt(self, number: int, kind: str, target: str, start: Callable[[], Job], dirty: int) -> Backup:
        path = self.file(number)
        job: Job | None = None
        failure: Error | None = None
        try:
            job = start()
            job.wait(timeout=self.timeout)
        except Error as error:
            failure = error
            if job is not None and not job.ended:  # a timeout: the target cannot be detached while the job runs
                job.cancel(force=True).wait(timeout=self.timeout)
        self.vm.blockdev_del(node_name=target)
        if failure is None:
            stored = sum(e["length"] for e in images.allocation_map(path) if e["data"] and e["depth"] == 0)
            attempt = Backup(number, kind, path, Outcome.COMPLETED, "", dirty, stored, job)
            self.attempts.append(attempt)
            return attempt
        path.unlink(missing_ok=True)
        self.attempts.append(Backup(number, kind, path, Outcome.FAILED, failure.why or str(failure), dirty, 0, job))
        raise self._failure(kind, path, failure) from failure

    def _has_bitmap(self) -> bool:
        table = bitmaps.frame(self.vm)
        return bool(((table["node"] == self.node) & (table["name"] == self.bitmap)).any())

    def _failure(self, kind: str, path: Path, failure: Error) -> Error:
        if kind == "full":
            if self._has_bitmap():  # the transaction added it; a new full backup needs a new start
                bitmaps.remove(self.vm, self.node, self.bitmap)
            return Error(f"the full backup into {path.name} failed", failure.why or str(failure), "call full() again")
        left = bitmaps.find(self.vm, self.node, self.bitmap).dirty_bytes
        return Error(
            f"the incremental backup into {path.name} failed",
            failure.why or str(failure),
            f"nothing is lost: bitmap '{self.bitmap}' on {self.node} still records {human_size(left)} changed "
            f"since {self.latest.name}; fix the cause and call incremental() again",
        )
