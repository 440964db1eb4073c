"""Image fleecing: a point-in-time view of a live disk, kept inside QEMU while the guest goes on writing.

Two forms, as QEMU's own ``tests/qemu-iotests/tests/image-fleecing`` builds them:

- ``copy-before-write`` (QEMU 7.0+): a ``copy-before-write`` filter is added over the disk's node with a
  scratch qcow2 as its ``target`` and put under the guest device with ``qom-set <device> drive <filter>`` (a
  realized device's drive can be changed at run time: checked on 7.2, 10.0 and 11.1); before the guest
  overwrites a cluster, the filter copies the old one to the scratch image. A ``snapshot-access`` node over
  the filter reads the disk as it was at the switch.
- ``backup``: ``blockdev-backup sync=none`` from the disk's node into a scratch qcow2 whose backing is that
  node; the scratch node reads as the disk at the job's start. Any QEMU with ``blockdev-backup`` has it, and
  it needs no device to re-point (a disk without a qdev path, such as a bare ``-blockdev``).

``remove`` undoes either, leaving the graph as it was.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from qblocknb.errors import Error, InputError
from qblocknb.live import images
from qblocknb.model.chain import device_id

if TYPE_CHECKING:
    from qblocknb.live.jobs import Job
    from qblocknb.live.machine import Machine

CBW, BACKUP = "copy-before-write", "backup"
FORMS = (CBW, BACKUP)


@dataclass
class Fleece:
    """What one point-in-time view put into QEMU, and when (host clock) the view was taken."""

    form: str
    device: str  # the disk, as vm.device names it
    qdev: str  # the guest device's QOM path, whose drive the filter form re-points
    root: str  # the disk's root node before (and after) the fleecing
    scratch: str  # the scratch qcow2's node
    scratch_file: Path
    view: str  # the node that reads as the disk at the point in time: what an export serves
    taken: tuple[float, float]  # host time just before and just after the switch or the job's start
    filter: str | None = None  # the copy-before-write node
    job: Job | None = None  # the sync=none backup job

    @property
    def nodes(self) -> list[str]:
        """The nodes this fleecing added, top first."""
        return [n for n in (self.view, self.filter, self.scratch) if n] if self.form == CBW else [self.scratch]


def choose_form(vm: Machine, disk: dict, form: str | None) -> str:
    """The form asked for, else the filter where QEMU has it and the device can be re-pointed, else the backup."""
    filter_ok = {CBW, "snapshot-access"} <= vm.schema.drivers and vm.has_command("qom-set") and bool(disk.get("qdev"))
    if form is None:
        return CBW if filter_ok else BACKUP
    if form not in FORMS:
        raise InputError(f"fleecing form '{form}' is not known", f"forms are {', '.join(FORMS)}", "pick one of those")
    if form == CBW and not filter_ok:
        raise InputError(
            f"cannot fleece '{device_id(disk)}' with a copy-before-write filter",
            "this QEMU lacks the copy-before-write or snapshot-access driver, or qom-set, or the disk has no "
            "guest device to re-point",
            "use form='backup' (blockdev-backup sync=none), which every QEMU has",
        )
    return form


def insert(vm: Machine, disk: dict, prefix: str, scratch_file: Path, form: str) -> Fleece:
    """Take the point-in-time view of ``disk``; on a refusal, what was already added is taken out again."""
    root = disk["inserted"]["node-name"]
    images.create(scratch_file, disk["inserted"]["image"]["virtual-size"])
    fleece = Fleece(form, device_id(disk), disk.get("qdev", ""), root, f"{prefix}-scratch", scratch_file, "", (0, 0))
    try:
        vm.execute("blockdev-add", {"driver": "qcow2", "node-name": fleece.scratch, **_scratch_options(fleece)})
        if form == CBW:
            _insert_filter(vm, fleece, prefix)
        else:
            before = time.time()
            fleece.job = vm.execute(
                "blockdev-backup", {"job-id": prefix, "device": root, "target": fleece.scratch, "sync": "none"}
            )
            fleece.view, fleece.taken = fleece.scratch, (before, time.time())
    except Error:
        with contextlib.suppress(Error):
            remove(vm, fleece)
        raise
    return fleece


def _scratch_options(fleece: Fleece) -> dict:
    """The scratch qcow2: plain for the filter's target, backed by the disk's node for the backup form."""
    options: dict = {"file": {"driver": "file", "filename": str(fleece.scratch_file)}}
    if fleece.form == BACKUP:
        options["backing"] = fleece.root
    return options


def _insert_filter(vm: Machine, fleece: Fleece, prefix: str) -> None:
    """copy-before-write over the root, the device re-pointed to it (the point in time), snapshot-access over it."""
    cbw = f"{prefix}-cbw"
    vm.execute("blockdev-add", {"driver": CBW, "node-name": cbw, "file": fleece.root, "target": fleece.scratch})
    fleece.filter = cbw
    before = time.time()
    vm.execute("qom-set", {"path": fleece.qdev, "property": "drive", "value": cbw})
    fleece.taken = (before, time.time())
    vm.execute("blockdev-add", {"driver": "snapshot-access", "node-name": f"{prefix}-access", "file": cbw})
    fleece.view = f"{prefix}-access"


def remove(vm: Machine, fleece: Fleece, timeout: float = 30.0) -> None:
    """Take the view out: the device back on its node, filter or job gone, scratch node closed and deleted."""
    present = {node["node-name"] for node in vm.query("query-named-block-nodes", {"flat": True})}
    if fleece.form == CBW:
        if fleece.view and fleece.view in present:
            vm.execute("blockdev-del", {"node-name": fleece.view})
        if fleece.filter and fleece.filter in present:
            if vm.disk(fleece.device)["inserted"]["node-name"] == fleece.filter:
                vm.execute("qom-set", {"path": fleece.qdev, "property": "drive", "value": fleece.root})
            vm.execute("blockdev-del", {"node-name": fleece.filter})
    elif fleece.job is not None and not fleece.job.ended:
        fleece.job.cancel().wait(timeout=timeout)
    if fleece.scratch in present:
        vm.execute("blockdev-del", {"node-name": fleece.scratch})
    fleece.scratch_file.unlink(missing_ok=True)
