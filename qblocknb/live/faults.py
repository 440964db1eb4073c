"""Real I/O errors for rehearsing failures: QEMU's ``blkdebug`` driver under an image, failing chosen requests.

``blkdebug`` sits between a format driver and its file and fails requests by a rule: which operation, which
errno, and whether once (a transient fault, gone after it fired) or always. A job meeting the error then does
what its error policy says (``on-error``, ``on-source-error``, ``on-target-error``)::

    >>> Fault("write", errno=ENOSPC, once=True).rule()
    {'event': 'write_aio', 'iotype': 'write', 'errno': 28, 'once': True}
    >>> blkdebug("/lab/e.qcow2", Fault("read"))["inject-error"]
    [{'event': 'read_aio', 'iotype': 'read', 'errno': 5}]

Put one in place with ``add_target`` (a job target outside the chain, for mirror and backup) or
``add_overlay`` (a new active layer of the chain, from an image made offline with its data and backing file)::

    lab.create("a.qcow2", size="64M")
    vm = lab.launch("a.qcow2", node_name="node-A")
    lab.create("b.qcow2", backing="a.qcow2")
    add_overlay(vm, "b.qcow2", "node-B", Fault("read", once=True))
    add_target(vm, "e.qcow2", "node-E", Fault("write"), size="64M")  # for blockdev-mirror or -backup
    print(vm.chain())                                                 # [a.qcow2] <-- [b.qcow2 (blkdebug)]

QEMU names a node over ``blkdebug`` with a ``json:`` description of its options, which the chain shows as
``b.qcow2 (blkdebug)``. ``blkdebug`` fires on data requests of the format node (``read_aio``/``write_aio``), so a
rule never trips on metadata or a flush. An overlay above a ``blkdebug`` layer must be made by QEMU
(``blockdev-snapshot-sync``): only then does its header name that layer as QEMU does, which is how the chain is
read. A commit into such a layer makes QEMU rename it and the layers above it once more; the live chain follows
those names too.
"""

from __future__ import annotations

import errno as errnos
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qblocknb.errors import InputError
from qblocknb.live import images

EIO, ENOSPC = errnos.EIO, errnos.ENOSPC
OPERATIONS = ("read", "write")


@dataclass(frozen=True)
class Fault:
    """One ``blkdebug`` rule: data ``read``s or ``write``s fail with ``errno``, once or always.

    ``sector`` (512-byte units of the image *file*, not of the guest disk) limits the rule to requests that
    touch it.
    """

    operation: str = "write"
    errno: int = EIO
    once: bool = False
    sector: int | None = None

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise InputError(
                f"a fault on '{self.operation}' cannot be injected",
                "blkdebug fails data reads or writes",
                "pass operation='read' or 'write'",
            )
        if not isinstance(self.errno, int) or self.errno <= 0:
            raise InputError(
                f"errno {self.errno!r} is not an error number",
                "blkdebug returns a positive errno such as 5 (EIO) or 28 (ENOSPC)",
                "pass faults.EIO or faults.ENOSPC",
            )
        if self.sector is not None and (not isinstance(self.sector, int) or self.sector < 0):
            raise InputError(
                f"sector {self.sector!r} is not a sector of the file",
                "a sector is a 512-byte block counted from 0",
                "pass a whole number from 0, or no sector for every request",
            )

    def rule(self) -> dict[str, Any]:
        """The ``inject-error`` entry: the data event arms it, and only the same kind of request then fails."""
        rule: dict[str, Any] = {"event": f"{self.operation}_aio", "iotype": self.operation, "errno": self.errno}
        if self.once:
            rule["once"] = True
        if self.sector is not None:
            rule["sector"] = self.sector
        return rule


def blkdebug(image: str | Path, *faults: Fault) -> dict[str, Any]:
    """The protocol node of a faulty image: ``blkdebug`` over the file, failing by ``faults``."""
    return {
        "driver": "blkdebug",
        "image": {"driver": "file", "filename": str(image)},
        "inject-error": [fault.rule() for fault in faults],
    }


def node_spec(image: str | Path, node_name: str, *faults: Fault, fmt: str = "qcow2") -> dict[str, Any]:
    """A ``blockdev-add`` spec: a format node over the file, under ``blkdebug`` when there are faults.

    The node is opened without its backing file (``backing: null``); ``blockdev-snapshot`` or a job gives it one.
    """
    file = blkdebug(image, *faults) if faults else {"driver": "file", "filename": str(image)}
    spec: dict[str, Any] = {"driver": fmt, "node-name": node_name, "file": file}
    if fmt == "qcow2":
        spec["backing"] = None
    return spec


def add_target(vm: Any, image: str, node_name: str, *faults: Fault, size: str | int | None = None) -> str:
    """Open ``image`` (created blank first when ``size`` is given) as node ``node_name`` with ``faults``.

    The node is a target for ``blockdev-mirror`` or ``blockdev-backup``; returns its node name.
    """
    path = vm.host_path(image)
    if size is not None:
        images.create(path, size)
    vm.execute("blockdev-add", node_spec(path, node_name, *faults, fmt=images.detect_format(path)))
    return node_name


def add_overlay(vm: Any, image: str, node_name: str, *faults: Fault) -> str:
    """Put ``image`` (an overlay made offline on the active layer's file) on top of the chain, with ``faults``.

    ``blockdev-add`` opens it (absolute path: a relative one would make QEMU describe every layer above as a
    ``json:`` name), then ``blockdev-snapshot`` makes it the device's active layer. Returns its node name.
    """
    below = vm.chain().active.node_name
    vm.execute("blockdev-add", node_spec(vm.host_path(image), node_name, *faults))
    vm.execute("blockdev-snapshot", {"node": below, "overlay": node_name})
    return node_name
