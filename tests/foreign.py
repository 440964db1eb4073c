"""QEMUs the toolkit did not start: command lines built the way libvirt and people write them.

Each variant attaches its image in another way (libvirt's ``-blockdev`` pairs,
``-drive`` with automatic node names, ``if=none`` plus ``-device``, ``scsi-hd``,
``ide-hd``); the process is started here with ``subprocess`` and reached with
``qb.connect``, as a user attaches to their own VM.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qblocknb.live.process import accel_args


def _blockdev(options: dict) -> list[str]:
    return ["-blockdev", json.dumps(options)]


def libvirt_style(image: Path, index: int = 1, disk: str = "virtio-disk0") -> list[str]:
    """libvirt's shape: a ``file`` node ``libvirt-N-storage`` under a format node ``libvirt-N-format``."""
    return [
        *_blockdev(
            {
                "driver": "file",
                "filename": str(image),
                "node-name": f"libvirt-{index}-storage",
                "auto-read-only": True,
                "discard": "unmap",
            }
        ),
        *_blockdev(
            {
                "node-name": f"libvirt-{index}-format",
                "read-only": False,
                "driver": "qcow2",
                "file": f"libvirt-{index}-storage",
            }
        ),
        "-device",
        f"virtio-blk-pci,drive=libvirt-{index}-format,id={disk}",
    ]


def drive_if_virtio(image: Path) -> list[str]:
    """``-drive if=virtio``: automatic ``#block`` node names, the drive called ``virtio0``."""
    return ["-drive", f"file={image},format=qcow2,if=virtio"]


def drive_if_none(image: Path) -> list[str]:
    """``-drive if=none,id=drive0`` plus ``-device virtio-blk-pci,drive=drive0,id=disk0``."""
    return ["-drive", f"file={image},format=qcow2,if=none,id=drive0", "-device", "virtio-blk-pci,drive=drive0,id=disk0"]


def scsi_hd(image: Path) -> list[str]:
    """A ``scsi-hd`` on virtio-scsi, with ``-blockdev`` nodes."""
    return [
        "-device",
        "virtio-scsi-pci,id=scsi0",
        *_blockdev({"driver": "qcow2", "node-name": "disk-fmt", "file": {"driver": "file", "filename": str(image)}}),
        "-device",
        "scsi-hd,drive=disk-fmt,id=scsi-disk0,bus=scsi0.0",
    ]


def ide_hd(image: Path) -> list[str]:
    """An ``ide-hd`` on q35's AHCI controller."""
    return [
        *_blockdev({"driver": "qcow2", "node-name": "ide-fmt", "file": {"driver": "file", "filename": str(image)}}),
        "-device",
        "ide-hd,drive=ide-fmt,bus=ide.0,id=sata-disk0",
    ]


@dataclass(frozen=True)
class Variant:
    """One way of attaching a disk, and the name ``vm.device`` then gives it."""

    name: str
    disk_args: Callable[[Path], list[str]]
    device: str


VARIANTS = [
    Variant("libvirt", libvirt_style, "virtio-disk0"),
    Variant("drive-if-virtio", drive_if_virtio, "virtio0"),
    Variant("drive-if-none", drive_if_none, "drive0"),
    Variant("scsi-hd", scsi_hd, "scsi-disk0"),
    Variant("ide-hd", ide_hd, "sata-disk0"),
]


class ForeignQemu:
    """A QEMU process started outside any Lab; ``end()`` kills it if it still runs."""

    def __init__(self, folder: Path, disk_args: list[str], paused: bool = True) -> None:
        self.socket = folder / "foreign.sock"
        self.log = folder / "foreign.log"
        args = [
            "qemu-system-x86_64",
            "-M",
            "q35",
            "-m",
            "128",
            "-nodefaults",
            "-display",
            "none",
            *accel_args(None),
            *(["-S"] if paused else []),
            *disk_args,
            "-qmp",
            f"unix:{self.socket},server=on,wait=off",
        ]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(args, cwd=folder, stdout=log, stderr=subprocess.STDOUT)

    def end(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
