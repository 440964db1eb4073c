"""Guest I/O where the disks are NBD exports (``qemu-storage-daemon``): the export's client is the guest.

A storage daemon has no guest device, no HMP and no ``stop``, so nothing can be written "as the guest would"
or flushed from its monitor.  What an NBD client reads through an export is what a guest would see, so
``write``, ``read_matches``, ``verify`` and ``compare`` go through the export, and ``flush`` is an NBD flush
of each export (its node, and the writable images under it).  The exports are reached by their ids: the
daemon names each export after its id (``block-export-add`` would otherwise name it after the node).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from qblocknb.errors import Error
from qblocknb.live import images
from qblocknb.live.ports import HostPaths
from qblocknb.live.tools import run
from qblocknb.model.chain import device_id


class Exporter(HostPaths, Protocol):
    """What export I/O uses of a QEMU: its disks (the exports in ``query-block``'s place) and host files."""

    @property
    def disks(self) -> list[str]: ...

    def disk(self, device: str | None = None) -> dict: ...


class ExportIO:
    """Reads, writes, flushes and checks through the NBD exports of one QEMU's server on a unix socket."""

    def __init__(self, machine: Exporter, socket: Path) -> None:
        self.vm = machine
        self.socket = socket

    def uri(self, device: str | None = None) -> str:
        """``nbd+unix:///EXPORT?socket=...`` of ``device`` (an export id or the node it serves), else ``vm.device``."""
        return f"nbd+unix:///{device_id(self.vm.disk(device))}?socket={self.socket}"

    def write(self, device: str | None, offset: int | str, length: int | str, pattern: int) -> None:
        command = images.io_command("write", offset, length, pattern)
        uri = self.uri(device)
        out = run("qemu-io", "-f", "raw", "-c", command, uri, what=f"writing into {uri}")
        if "wrote" not in out:
            raise Error(
                f"qemu-io '{command}' on {uri} wrote nothing", out.strip() or "it printed nothing", "check the range"
            )

    def read_matches(self, device: str | None, offset: int | str, length: int | str, pattern: int) -> bool:
        return images.runs_match(self.uri(device), [(offset, length, pattern)], fmt="raw")

    def flush(self) -> None:
        """An NBD flush through each export, so that ``qemu-img`` and ``qemu-io -U`` read the files right."""
        for export in self.vm.disks:
            uri = self.uri(export)
            run("qemu-io", "-f", "raw", "-c", "flush", uri, what=f"flushing {uri}")

    def verify(self, expected: list[images.Run], image: str | Path | None = None) -> bool:
        if image is None:
            return images.runs_match(self.uri(), expected, fmt="raw")
        self.flush()
        return images.runs_match(self.vm.host_path(image), expected)

    def compare(self, other: str | Path) -> images.Comparison:
        return images.compare(self.uri(), self.vm.host_path(other))
