"""Guest I/O and checks of what the guest sees, on any QEMU.

A write goes through the disk's own device, as a guest's would: HMP ``qemu-io -d
QDEV``, with QDEV the device path that ``query-block`` reports (virtio-blk's
backend, a ``scsi-hd``, an ``ide-hd``; any id).  Where its verdict goes depends on
the QEMU: in the HMP reply itself, or on QEMU's stdout, which only a Lab-launched
QEMU has someone reading.  When the verdict cannot be seen, the guest view is read
through a read-only NBD export of the disk's root node on a private unix socket,
so nothing is stopped: a write is confirmed by reading it back, and ``verify`` and
``compare`` read the export instead of the files.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from qblocknb.errors import CommandError, Error
from qblocknb.live import images
from qblocknb.live.ports import HostPaths, Querier
from qblocknb.model import hmp
from qblocknb.model.chain import FILTER_DRIVERS, PROTOCOL_DRIVERS, device_id

if TYPE_CHECKING:
    from qblocknb.live.process import QemuProcess
    from qblocknb.model.chain import Chain

STDOUT_WAIT = 5.0
VERDICTS = ("wrote", "read ", "Pattern verification failed")
SendFd = Callable[[int, str], None]  # hands QEMU an open descriptor by name (QMP getfd), where the backend can


class Disks(Querier, HostPaths, Protocol):
    """What guest I/O uses of a QEMU: its disks and their chain, HMP, quiet queries and host files.

    ``process`` is the QEMU launched here, whose stdout carries qemu-io's verdicts; None for one attached to.
    """

    process: QemuProcess | None

    def disk(self, device: str | None = None) -> dict: ...

    def chain(self, device: str | None = None) -> Chain: ...

    def hmp(self, command_line: str) -> str: ...


def io_failed(command: str, disk: dict, verdict: str) -> Error:
    """qemu-io's failure as a sentence: an I/O error below the device, or a range the disk does not have."""
    io_error = "failed:" in verdict
    return Error(
        f"qemu-io '{command}' on '{device_id(disk)}' failed",
        verdict.strip() or "QEMU printed nothing",
        "an image below the device returned an I/O error: look for a fault node in vm.block_graph(), "
        "or run qemu-img check on the chain"
        if io_error
        else "check the offset and length against the disk size",
    )


class GuestIO:
    """Writes and reads through a machine's disks, and verification of the guest view."""

    def __init__(self, machine: Disks, send_fd: SendFd | None = None) -> None:
        self.vm = machine
        self._send_fd = send_fd
        self._lock = threading.Lock()  # one qemu-io verdict on QEMU's stdout at a time

    # -- guest I/O --------------------------------------------------------------------------
    def write(self, device: str | None, offset: int | str, length: int | str, pattern: int) -> None:
        disk = self.vm.disk(device)
        command = images.io_command("write", offset, length, pattern)
        verdict = self._qemu_io(disk, command)
        if verdict is None:  # nobody sees QEMU's stdout: read the range back instead
            if not self._read_export(disk, [(offset, length, pattern)]):
                raise Error(
                    f"qemu-io '{command}' on '{device_id(disk)}' did not reach the disk",
                    "reading the range back through NBD does not show the pattern",
                    "check the offset and length against the disk size",
                )
        elif "wrote" not in verdict:
            raise io_failed(command, disk, verdict)

    def read_matches(self, device: str | None, offset: int | str, length: int | str, pattern: int) -> bool:
        disk = self.vm.disk(device)
        if not self._lab_launched():
            return self._read_export(disk, [(offset, length, pattern)])
        command = images.io_command("read", offset, length, pattern)
        verdict = self._qemu_io(disk, command) or ""
        if "Pattern verification failed" in verdict:
            return False
        if "read " not in verdict or "read failed" in verdict:  # an I/O error is not a mismatch: say it
            raise io_failed(command, disk, verdict)
        return True

    def _lab_launched(self) -> bool:
        """A Lab's QEMU: its stdout (qemu-io's verdicts) is read, and its files lie on this host."""
        return self.vm.process is not None

    def _qemu_io(self, disk: dict, command: str) -> str | None:
        """Run qemu-io on the disk's device; its verdict, or None when it went to a stdout nobody reads."""
        line = hmp.qemu_io(disk.get("qdev") or disk["device"], command, qdev=bool(disk.get("qdev")))
        with self._lock:
            if self.vm.process is not None:
                self.vm.process.new_stdout()
            reply = self.vm.hmp(line).strip()
            if reply:
                if any(word in reply for word in VERDICTS):
                    return reply
                raise Error(f"qemu-io '{command}' on '{device_id(disk)}' was refused", reply, "check the device name")
            if self.vm.process is None:
                return None
            return self._stdout_verdict()

    def _stdout_verdict(self) -> str:
        deadline = time.monotonic() + STDOUT_WAIT
        text = ""
        while time.monotonic() < deadline:
            text += self.vm.process.new_stdout()
            if any(word in text for word in VERDICTS) or "failed" in text or "error" in text.lower():
                break
            time.sleep(0.01)
        return text

    # -- checks -----------------------------------------------------------------------------
    def flush(self) -> None:
        """Make the files on disk tell the truth for readers outside QEMU (``qemu-img``, ``qemu-io -U``).

        ``stop`` drains and flushes the nodes in use, but not all: after a mirror's pivot, for one, the old
        active layer is reopened read-only under the new one and keeps qcow2 metadata in memory. So each
        image node also gets its own flush, through HMP ``qemu-io NODE "flush"``. A QEMU the toolkit did not
        start is not stopped (its guest keeps running): its nodes are flushed one by one. A backend with no
        way to QEMU's monitor (libvirt's own API) has no flush to send: there QEMU flushes an image when it
        closes it (at a job's end, or when the domain stops), and readers outside see the rest only then.
        """
        if not self.vm.has_command("human-monitor-command"):
            return
        quiet = self.vm.query
        running = quiet("query-status").get("running", False)
        stopping = self._lab_launched()  # a foreign guest keeps running
        if stopping:
            quiet("stop")
        for node in quiet("query-named-block-nodes", {"flat": True}):
            if node.get("drv") not in PROTOCOL_DRIVERS | FILTER_DRIVERS:
                quiet("human-monitor-command", {"command-line": hmp.qemu_io(node["node-name"], "flush")})
        if stopping and running:
            quiet("cont")

    def verify(self, expected: list[images.Run], image: str | Path | None = None) -> bool:
        if image is None and not self._lab_launched():
            return self._read_export(self.vm.disk(None), expected)
        self.flush()
        path = self.vm.host_path(image or self.vm.chain().active.file)
        return images.runs_match(path, expected)

    def compare(self, other: str | Path) -> images.Comparison:
        if not self._lab_launched():
            with self._export(self.vm.disk(None)) as uri:
                return images.compare(uri, self.vm.host_path(other))
        self.flush()
        return images.compare(self.vm.host_path(self.vm.chain().active.file), self.vm.host_path(other))

    # -- the NBD view -----------------------------------------------------------------------
    def _read_export(self, disk: dict, runs: list[images.Run]) -> bool:
        with self._export(disk) as uri:
            return images.runs_match(uri, runs, fmt="raw")

    @contextlib.contextmanager
    def _export(self, disk: dict) -> Iterator[str]:
        """A read-only NBD export of the disk's root node on a private socket; its URI while the block runs."""
        node = disk["inserted"]["node-name"]
        folder = Path(tempfile.mkdtemp(prefix="qbn-view-"))
        path = folder / "nbd.sock"
        name = "qblocknb-view"
        listener = self._start_server(path, device_id(disk))
        try:
            if self.vm.has_command("block-export-add"):
                arguments = {"type": "nbd", "id": name, "node-name": node, "name": name, "writable": False}
                self.vm.query("block-export-add", arguments)
            else:
                self.vm.query("nbd-server-add", {"device": node, "name": name})
            yield f"nbd+unix:///{name}?socket={path}"
        finally:
            with contextlib.suppress(Error):
                self.vm.query("nbd-server-stop")  # removes the export too
            if listener is not None:
                listener.close()
            shutil.rmtree(folder, ignore_errors=True)

    def _start_server(self, path: Path, disk_name: str) -> socket.socket | None:
        """Start QEMU's NBD server on ``path``: on a socket we bind and hand over, so QEMU's user does not matter."""
        listener = None
        if self._send_fd is not None:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(path))
            listener.listen(4)
            self._send_fd(listener.fileno(), "qblocknb-view")
            address = {"type": "fd", "data": {"str": "qblocknb-view"}}
        else:
            address = {"type": "unix", "data": {"path": str(path)}}
        try:
            self.vm.query("nbd-server-start", {"addr": address})
        except CommandError as error:
            if listener is not None:
                listener.close()
            if "already" in error.desc:
                raise Error(
                    f"reading what the guest sees on '{disk_name}' needs QEMU's NBD server",
                    "it is already running for something else (one server per QEMU)",
                    "read again after that NBD server stops (nbd-server-stop)",
                ) from None
            raise Error(
                f"reading what the guest sees on '{disk_name}' needs QEMU's NBD server on {path}",
                f"QEMU could not listen there ({error.desc}); a QEMU on another host cannot",
                "check the data on the QEMU's own host (qemu-img, qemu-io -U)",
            ) from None
        return listener
