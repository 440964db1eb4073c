"""A Lab: a private scratch folder, the images in it, and the QEMUs it starts.

    >>> import qblocknb as qb
    >>> with qb.Lab() as lab:                     # doctest: +SKIP
    ...     lab.create("a.qcow2", size="64M")
    ...     vm = lab.launch("a.qcow2", node_name="node-A")
    ...     str(vm.chain())
    '[a.qcow2]'

Every process a Lab started is ended on ``close()``, on leaving the ``with``
block, and at interpreter exit: quit, then SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

from qblocknb.errors import Error, InputError
from qblocknb.live import guestimage, images
from qblocknb.live.guest import Guest, guest_accel, qemu_args
from qblocknb.live.machine import Machine
from qblocknb.live.process import QemuProcess, command_line
from qblocknb.model.chain import Chain
from qblocknb.model.paths import resolve
from qblocknb.qmp import loop
from qblocknb.qmp.session import Session

MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes
_open_labs: weakref.WeakSet[Lab] = weakref.WeakSet()


@atexit.register
def _end_open_labs() -> None:
    """End every lab's QEMUs at exit; registered after the QMP loop's own exit hook, so it runs before it."""
    for lab in list(_open_labs):
        lab._finalizer()


class Lab:
    """A scratch folder (mode 0700) with image tools and QEMU launching."""

    def __init__(self, path: str | Path | None = None) -> None:
        self._temporary = path is None
        self.path = Path(tempfile.mkdtemp(prefix="qblocknb-")) if path is None else Path(path).resolve()
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)  # private from the start, not just after chmod
        self.path.chmod(0o700)
        self.machines: list[Machine] = []
        self._socket_dir: Path | None = None
        self._finalizer = weakref.finalize(self, Lab._end_all, self.machines)
        self._finalizer.atexit = False  # _end_open_labs does it at exit, while the QMP loop still runs
        _open_labs.add(self)

    def __repr__(self) -> str:
        return f"<Lab {self.path} with {len(self.machines)} QEMU>"

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def file(self, name: str | Path) -> Path:
        """The path of ``name`` inside the lab (absolute paths pass through)."""
        return resolve(name, self.path)

    # -- images -----------------------------------------------------------------------------
    def create(self, name: str, size: int | str | None = None, backing: str | None = None, fmt: str = "qcow2") -> Path:
        """``qemu-img create``; with ``backing=`` an overlay on that image."""
        if size is None and backing is None:
            raise InputError(
                f"creating {name} needs a size",
                "a new image without a backing file has no size",
                "pass size='64M' or backing='a.qcow2'",
            )
        backing_path = self.file(backing) if backing else None
        if backing_path is not None and not backing_path.exists():
            raise InputError(
                f"creating {name} on backing '{backing}' failed",
                f"{backing_path} does not exist",
                "create the backing image first",
            )
        return images.create(self.file(name), size, backing_path, fmt)

    def write(self, name: str, offset: int | str, length: int | str, pattern: int = 0xCD) -> None:
        """Write a pattern into an image offline (no QEMU may hold it)."""
        images.write(self._existing(name), offset, length, pattern)

    def read_matches(self, name: str, offset: int | str, length: int | str, pattern: int) -> bool:
        """True when the range reads as ``pattern`` through the image's backing chain."""
        return images.read_matches(self._existing(name), offset, length, pattern)

    def runs_match(self, name: str, runs: list[images.Run]) -> bool:
        """True when each ``(offset, length, pattern)`` run reads back from ``name`` (one qemu-io for all)."""
        return images.runs_match(self._existing(name), runs)

    def info(self, name: str) -> list[dict]:
        """``qemu-img info --backing-chain`` as a list, active image first."""
        return images.info_chain(self._existing(name))

    def chain(self, name: str) -> Chain:
        """The on-disk chain under ``name``."""
        return Chain.from_image_info(self.info(name))

    def map(self, name: str) -> list[dict]:
        """``qemu-img map`` as data: ranges with ``data``, ``zero`` and ``depth`` (0 is the image itself)."""
        return images.allocation_map(self._existing(name))

    def compare(self, first: str, second: str, strict: bool = False) -> images.Comparison:
        """``qemu-img compare``: True when the guest would read the same bytes."""
        return images.compare(self._existing(first), self._existing(second), strict)

    def check(self, name: str) -> dict:
        """``qemu-img check`` as data."""
        return images.check(self._existing(name))

    def _existing(self, name: str) -> Path:
        path = self.file(name)
        if not path.exists():
            present = ", ".join(sorted(p.name for p in self.path.iterdir() if p.suffix in (".qcow2", ".raw", ".img")))
            raise InputError(
                f"image '{name}' does not exist in the lab",
                f"images here are {present or 'none'}",
                "create it with lab.create()",
            )
        return path

    # -- processes --------------------------------------------------------------------------
    def launch(
        self,
        image: str,
        node_name: str = "node-A",
        incoming: str | None = None,
        accel: str | None = None,
        fmt: str | None = None,
        name: str | None = None,
        wrapper: Sequence[str] = (),
        guest: bool = False,
    ) -> Machine:
        """Start a QEMU with ``image`` as ``node_name`` on virtio-blk device ``virtio0``, paused (``-S``).

        ``wrapper`` prefixes the command line, e.g. ``["ip", "netns", "exec", "ns1"]`` to start QEMU inside a
        network namespace (the QMP socket is a file, so it is reached from any namespace).
        ``guest=True`` boots a tiny Linux with the image as /dev/vda instead, and returns once its shell answers:
        ``vm.guest`` (see ``qblocknb.live.guest``) runs commands in it and writes checkable data while jobs run.
        """
        self._check_open(f"launch {image}")
        path = self._existing(image)
        number = len(self.machines)
        name = name or f"qemu{number}"
        guest_options: list[str] = []
        if guest:
            boot = guestimage.boot_files()  # before QEMU starts: a missing kernel costs no process
            serial = (self.socket_path(f"{name}.console.sock"), self.socket_path(f"{name}.progress.sock"))
            console_log = self.path / f"{name}.console.log"
            guest_options = qemu_args(boot, *serial, console_log)
            accel = guest_accel(accel)
        memory = 256 if guest else 128
        fmt = fmt or images.detect_format(path)
        started = time.monotonic()
        process, session = self.spawn(
            name,
            lambda socket: [
                *wrapper,
                *command_line(path, node_name, fmt, socket, incoming, accel, memory, guest_options),
            ],
        )
        machine = Machine(session, process, cwd=self.path, device="virtio0")
        self.machines.append(machine)
        if guest:
            machine.guest = Guest(machine.gone_error, *serial, console_log, started)
            try:
                machine.guest.boot()
            except Error:
                machine.quit(timeout=3)
                raise
        return machine

    def spawn(self, name: str, command: Callable[[Path], list[str]]) -> tuple[QemuProcess, Session]:
        """Start the process ``command(qmp_socket)`` names and connect to its QMP socket (a QEMU, or
        ``qemu-storage-daemon``); the lab ends it once its Machine is in ``lab.machines``."""
        self._check_open(f"start {name}")
        socket = self.socket_path(f"{name}.sock")
        socket.unlink(missing_ok=True)
        process = QemuProcess(command(socket), cwd=self.path, log_stem=self.path / name)

        def gone(what: str) -> Error | None:
            return None if process.alive() else process.gone_error(what)

        session = Session(socket, name=name, gone=gone)
        try:
            session.connect()
        except Error:
            process.terminate()
            raise
        return process, session

    def _check_open(self, what: str) -> None:
        if not self._finalizer.alive:
            raise InputError(
                f"cannot {what} from a closed lab",
                "the lab ended its QEMUs and no longer looks after new ones",
                "create a new qb.Lab()",
            )

    def socket_path(self, name: str) -> Path:
        """A unix socket path (QMP, NBD, serial) short enough for AF_UNIX, inside the lab when it fits."""
        if len(str(self.path / name)) <= MAX_SOCKET_PATH:
            return self.path / name
        if self._socket_dir is None:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="qbn-"))
        return self._socket_dir / name

    def close(self) -> None:
        """End every QEMU this lab started; remove the folder if the lab made it."""
        self._finalizer()  # runs _end_all once; a later garbage collection finds nothing to do
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        if self._temporary:
            shutil.rmtree(self.path, ignore_errors=True)

    @staticmethod
    def _end_all(machines: list[Machine]) -> None:
        if loop.in_loop_thread():  # a garbage collection on the event thread: quit from elsewhere
            threading.Thread(target=Lab._end_all, args=(machines,), daemon=False).start()
            return
        for machine in machines:
            try:
                machine.quit(timeout=3)
            except Exception:  # at exit nothing may stop the others from being ended
                if machine.process is not None:
                    machine.process.terminate()
