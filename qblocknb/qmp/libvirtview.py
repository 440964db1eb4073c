"""What the guest sees, read over NBD from a pull-mode libvirt backup: QEMU's ``block-export-add``, natively.

``vm.verify``, ``vm.read_matches`` and ``vm.compare`` read a disk through a read-only NBD export on a unix
socket (``nbd-server-start``, ``block-export-add``, ``nbd-server-stop``).  libvirt has no such export, but a
pull-mode ``backupBegin`` gives one: the disk at this point in time, with a scratch file for the clusters the
guest overwrites meanwhile, so the guest keeps running and the domain is not tainted.  ``PullView`` turns the
three QMP commands into that backup and its end.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from qblocknb.errors import InputError
from qblocknb.model.domainxml import Disk, find_layer
from qblocknb.qmp.libvirtjobs import BACKUP_OPERATION


class PullView:
    """One pull-mode backup of a domain, exported over NBD while a check reads it."""

    def __init__(self, libvirt: Any, domain: Any, timeout: float) -> None:
        self.libvirt, self.domain, self.timeout = libvirt, domain, timeout
        self.socket: str | None = None
        self.folder: Path | None = None

    def server(self, arguments: dict) -> None:
        """``nbd-server-start``: remember the unix socket the export is to listen on (libvirt creates it)."""
        address = arguments.get("addr") or {}
        data = address.get("data", address)
        if address.get("type") not in ("unix", None) or not data.get("path"):
            raise InputError(
                "libvirt exports a disk only on a unix socket it creates itself",
                f"the address {address} is not a unix socket path",
                "pass addr={'type': 'unix', 'data': {'path': PATH}}",
            )
        self.socket = str(data["path"])

    def open(self, disks: list[Disk], node: str | None, arguments: dict) -> None:
        """``block-export-add`` (or ``nbd-server-add``) of ``node``'s disk, read-only, at this point in time."""
        if arguments.get("writable"):
            raise InputError(
                "libvirt exports a disk only read-only, at a point in time",
                "its NBD export comes from a pull-mode backup",
                "use drive_mirror to copy a disk, or connect_libvirt(..., passthrough=True)",
            )
        if self.socket is None:
            raise InputError("block-export-add needs an NBD server", "none was started", "send nbd-server-start first")
        found = find_layer(disks, node or "")
        if found is None:
            raise InputError(
                f"there is no disk or layer '{node}' to export",
                "the domain has none by that name",
                "name the disk (vda)",
            )
        disk = found[0]
        self.folder = Path(tempfile.mkdtemp(prefix="qbn-pull-"))
        others = "".join(f"<disk name={quoteattr(d.target)} backup='no'/>" for d in disks if d.target != disk.target)
        name = arguments.get("name") or disk.target
        xml = (
            f"<domainbackup mode='pull'><server transport='unix' socket={quoteattr(self.socket)}/><disks>"
            f"<disk name={quoteattr(disk.target)} backup='yes' type='file' exportname={quoteattr(name)}>"
            f"<scratch file={quoteattr(str(self.folder / 'scratch.qcow2'))}/></disk>{others}</disks></domainbackup>"
        )
        try:
            self.domain.backupBegin(xml, None, 0)
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        """``nbd-server-stop``: end the backup (which removes the export) and its scratch file."""
        if self.folder is not None:
            with contextlib.suppress(self.libvirt.libvirtError):  # already ended
                self.domain.abortJob()
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline and self.domain.jobStats(0).get("operation") == BACKUP_OPERATION:
                time.sleep(0.02)
            shutil.rmtree(self.folder, ignore_errors=True)
        self.socket = self.folder = None
