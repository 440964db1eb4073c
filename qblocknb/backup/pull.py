"""Pull-mode backup: a live disk's point-in-time view served over NBD, for any client to read at its own pace.

The guest keeps running; QEMU keeps the view by image fleecing (``qblocknb.backup.fleecing``: a
``copy-before-write`` filter with ``snapshot-access`` where QEMU has them, else ``blockdev-backup
sync=none``) and exports it on a private unix socket. A ``bitmap`` makes it incremental: the export also
carries ``qemu:dirty-bitmap:NAME``, what changed between the previous backup and this one::

    full = qb.backup.pull(vm, "virtio0", bitmap="b0")   # no 'b0' yet: a full backup, 'b0' records from now on
    full.save("full.qcow2"); full.close()                # 'b0' kept, recording since full's point in time
    vm.write("virtio0", "1M", "64k", pattern=0x11)
    inc = qb.backup.pull(vm, "virtio0", bitmap="b0")    # 'b0' exists: incremental
    inc.extents                                          # the dirty ranges, read over NBD
    inc.save_incremental("inc1.qcow2", backing="full.qcow2"); inc.close()

While a backup is open, its bitmap goes on recording into a successor; ``close`` moves the bitmap to this
backup's point in time only after a save succeeded (or ``backed_up=True`` for another client), so a failed
backup loses nothing. ``close(keep_bitmap=False)`` removes the bitmap too.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from qblocknb.backup import bitmaps, fleecing, nbdclient
from qblocknb.errors import CommandError, Error, InputError

if TYPE_CHECKING:
    from qblocknb.live.machine import Machine


def pull(vm: Machine, device: str | None = None, bitmap: str | None = None, *, form: str | None = None) -> PullBackup:
    """Fleece ``device`` (default ``vm.device``) and export the view over NBD; see the module's docstring.

    ``form`` forces ``"copy-before-write"`` or ``"backup"`` (default: the filter where this QEMU can).
    """
    return PullBackup(vm, device, bitmap, form)


class PullBackup:
    """One open pull-mode backup: ``uri``, ``extents``, ``save``, ``save_incremental``, ``close``."""

    def __init__(self, vm: Machine, device: str | None, bitmap: str | None, form: str | None) -> None:
        self.vm = vm
        disk = vm.disk(device)
        self.node = vm.chain(device).active.node_name or disk["inserted"]["node-name"]  # where the bitmap lives
        self.bitmap = bitmap
        self.incremental = bitmap is not None and bitmap in _bitmaps(vm, self.node)
        self.name = _free_name(vm)
        self.successor = f"{bitmap}-{self.name}" if self.incremental else None
        self.backed_up = False
        self.closed = False
        self.folder = Path(tempfile.mkdtemp(prefix="qbn-pull-"))  # 0700: the socket and the scratch image
        self.socket = self.folder / "nbd.sock"
        form = fleecing.choose_form(vm, disk, form)
        self._server = False
        try:
            self._start_bitmap()  # before the point in time: a write in between is recorded twice, never lost
            self.fleece = fleecing.insert(vm, disk, self.name, self.folder / "scratch.qcow2", form)
            self._export()
        except Error:
            self._undo()
            self._settle_bitmap(keep=True)  # nothing was backed up: the bitmap as it was before
            raise

    def __repr__(self) -> str:
        state = "closed" if self.closed else self.uri
        return f"<PullBackup {self.kind} of {self.fleece.device} by {self.fleece.form}: {state}>"

    def __enter__(self) -> PullBackup:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.closed:
            self.close()

    @property
    def kind(self) -> str:
        return "incremental" if self.incremental else "full"

    @property
    def taken(self) -> tuple[float, float]:
        """Host times (``time.time()``) just before and after the point in time the view holds."""
        return self.fleece.taken

    @property
    def uri(self) -> str:
        """The export, as ``qemu-img``, ``qemu-io`` and ``nbdinfo`` take it."""
        return f"nbd+unix:///{self.name}?socket={self.socket}"

    @property
    def extents(self) -> pd.DataFrame:
        """``start``, ``length`` of what to copy: the dirty ranges of an incremental, the allocated ones of a full."""
        self._require_open("read its extents")
        if self.incremental:
            return nbdclient.dirty_extents(self.socket, self.name, str(self.bitmap))
        return nbdclient.data_extents(self.socket, self.name)

    # -- clients ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """A full qcow2 copy of the view."""
        self._require_open("save it")
        saved = nbdclient.copy_all(self.socket, self.name, self._new_file(path))
        self.backed_up = True
        return saved

    def save_incremental(self, path: str | Path, backing: str | Path) -> Path:
        """A qcow2 overlay on ``backing`` (the previous backup) holding only the dirty ranges."""
        self._require_open("save it")
        if not self.incremental:
            raise InputError(
                "a full pull backup has no incremental to save",
                f"it was opened without an existing bitmap ({self.bitmap or 'none given'})",
                "call save(path) for the whole disk",
            )
        size = self.vm.disk(self.fleece.device)["inserted"]["image"]["virtual-size"]
        target = self._new_file(path)
        base = self._host(backing)
        saved = nbdclient.copy_extents(self.socket, self.name, self.extents, target, base, size)
        self.backed_up = True
        return saved

    # -- the end ---------------------------------------------------------------------------
    def close(self, keep_bitmap: bool = True, backed_up: bool | None = None) -> None:
        """Remove the export, the fleecing and the scratch image, leaving the chain as it was.

        The bitmap moves to this backup's point in time when it was ``backed_up`` (default: a save here
        succeeded) and stays as it was otherwise; ``keep_bitmap=False`` removes it.
        """
        if self.closed:
            return
        self.backed_up = self.backed_up if backed_up is None else backed_up
        self._undo()
        self._settle_bitmap(keep_bitmap)
        self.closed = True

    def _undo(self) -> None:
        """Everything but the user's bitmap, in reverse order of setting up; safe on a half-made backup."""
        exports = self.vm.query("query-block-exports")
        if any(export["id"] == self.name for export in exports):
            self.vm.execute("block-export-del", {"id": self.name})
        if self._server:
            self.vm.execute("nbd-server-stop")  # waits for the export to be gone
            self._server = False
        fleece = getattr(self, "fleece", None)
        if fleece is not None:
            if self.incremental and str(self.bitmap) in _bitmaps(self.vm, fleece.view):  # the frozen copy
                self.vm.execute("block-dirty-bitmap-remove", {"node": fleece.view, "name": self.bitmap})
            fleecing.remove(self.vm, fleece)
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------------------
    def _start_bitmap(self) -> None:
        """A full backup starts its bitmap; an incremental starts the successor that records during it."""
        if self.bitmap is None:
            return
        if self.incremental:
            granularity = _bitmaps(self.vm, self.node)[self.bitmap]["granularity"]
            bitmaps.add(self.vm, self.node, str(self.successor), granularity=granularity)
        else:
            bitmaps.add(self.vm, self.node, self.bitmap)

    def _export(self) -> None:
        """The view on the NBD server, with a frozen copy of the bitmap on the exported node for an incremental."""
        view = self.fleece.view
        extra: dict = {}
        if self.incremental:
            bitmap = str(self.bitmap)
            granularity = _bitmaps(self.vm, self.node)[bitmap]["granularity"]
            add = {"node": view, "name": bitmap, "granularity": granularity, "disabled": True}
            self.vm.execute("block-dirty-bitmap-add", add)
            self.vm.execute(
                "block-dirty-bitmap-merge",
                {"node": view, "target": bitmap, "bitmaps": [{"node": self.node, "name": bitmap}]},
            )
            extra["bitmaps"] = [bitmap]
        try:
            self.vm.execute("nbd-server-start", {"addr": {"type": "unix", "data": {"path": str(self.socket)}}})
        except CommandError as error:
            if "already" in error.desc:
                raise Error(
                    f"a pull backup of '{self.fleece.device}' needs QEMU's NBD server",
                    "it is already running for something else (one server per QEMU)",
                    "pull again after that NBD server stops (nbd-server-stop)",
                ) from None
            raise
        self._server = True
        arguments = {"type": "nbd", "id": self.name, "node-name": view, "name": self.name, "writable": False}
        self.vm.execute("block-export-add", {**arguments, **extra})

    def _settle_bitmap(self, keep: bool) -> None:
        """The user's bitmap after the backup: advanced to its point in time, left as it was, or removed."""
        if self.bitmap is None:
            return
        bitmap, node = self.bitmap, self.node
        present = _bitmaps(self.vm, node)
        if self.incremental:
            if keep and self.backed_up:  # clear, then take the successor's record: both record meanwhile
                bitmaps.clear(self.vm, node, bitmap)
                bitmaps.merge(self.vm, node, bitmap, [str(self.successor)])
            elif not keep:
                bitmaps.remove(self.vm, node, bitmap)
            if self.successor in present:
                bitmaps.remove(self.vm, node, str(self.successor))
        elif bitmap in present and not (keep and self.backed_up):  # a full backup's new bitmap is void without it
            bitmaps.remove(self.vm, node, bitmap)

    def _require_open(self, what: str) -> None:
        if self.closed:
            raise InputError(f"cannot {what}: pull backup {self.name} is closed", "", "open a new one with pull()")

    def _host(self, path: str | Path) -> Path:
        """A relative name is in QEMU's working folder (the lab's), as for every other file QEMU is given."""
        return Path(path) if Path(path).is_absolute() else self.vm.host_path(path)

    def _new_file(self, path: str | Path) -> Path:
        target = self._host(path)
        if target.exists():
            raise InputError(f"{target.name} already exists", "a backup is never overwritten", "pick another name")
        return target


def _bitmaps(vm: Machine, node: str) -> dict[str, dict]:
    """The named bitmaps of any node (filters too, which ``qb.bitmaps`` does not list), by name."""
    for entry in vm.query("query-named-block-nodes", {"flat": True}):
        if entry["node-name"] == node:
            return {b["name"]: b for b in entry.get("dirty-bitmaps", []) if b.get("name")}
    return {}


def _free_name(vm: Machine) -> str:
    """``pull0``, ``pull1``, ...: the first name no node or export of this QEMU starts with."""
    taken = {n["node-name"] for n in vm.query("query-named-block-nodes", {"flat": True})}
    taken |= {e["id"] for e in vm.query("query-block-exports")}
    number = 0
    while any(name.startswith(f"pull{number}") for name in taken):
        number += 1
    return f"pull{number}"
