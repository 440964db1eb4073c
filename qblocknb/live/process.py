"""Starting and ending QEMU processes that have no guest, only block devices.

A block job needs no guest OS: ``-S`` keeps the vCPUs stopped while the block
layer works.  KVM is used when ``/dev/kvm`` can be opened, TCG otherwise,
so the same code runs on a laptop and on Binder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

from qblocknb.errors import QEMUGone
from qblocknb.live.tools import require

QEMU = "qemu-system-x86_64"


def kvm_usable() -> bool:
    """True when this process may open /dev/kvm (Binder and most CI have no KVM)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def accel_args(accel: str | None) -> list[str]:
    """``-accel`` options: the one asked for, else ``$QBLOCKNB_ACCEL`` (``tcg`` acts like Binder), else KVM or TCG."""
    accel = accel or os.environ.get("QBLOCKNB_ACCEL")
    if accel:
        return ["-accel", accel]
    return ["-accel", "kvm", "-accel", "tcg"] if kvm_usable() else ["-accel", "tcg"]


def blockdev_json(image: Path, node_name: str, fmt: str) -> str:
    """The ``-blockdev`` JSON for an image file; JSON avoids comma-escaping in paths."""
    return json.dumps(
        {
            "driver": fmt,
            "node-name": node_name,
            "file": {"driver": "file", "filename": str(image), "node-name": f"file-{node_name}"},
        }
    )


def command_line(
    image: Path,
    node_name: str,
    fmt: str,
    qmp_socket: Path,
    incoming: str | None,
    accel: str | None,
    memory_mb: int = 128,
    guest: Sequence[str] = (),
) -> list[str]:
    """The whole QEMU command line, in the seed's shape, with the modern ``-qmp`` spelling.

    ``guest`` holds a guest's boot options (``qblocknb.live.guest.qemu_args``): its vCPUs then run, without ``-S``.
    """
    args = [
        require(QEMU),
        "-display",
        "none",
        "-no-user-config",
        "-nodefaults",
        "-M",
        "q35",
        "-m",
        str(memory_mb),
        *([] if guest else ["-S"]),
        *accel_args(accel),
        "-blockdev",
        blockdev_json(image, node_name, fmt),
        "-device",
        f"virtio-blk,drive={node_name},id=virtio0",
        "-qmp",
        f"unix:{str(qmp_socket).replace(',', ',,')},server=on,wait=off",  # QEMU's option syntax doubles a comma
        *guest,
    ]
    if incoming:
        args += ["-incoming", incoming]
    stdbuf = shutil.which("stdbuf")
    # Line-buffer QEMU's stdout: HMP qemu-io prints its verdict there, and we read it back.
    return [*tie_to_parent(), *([stdbuf, "-oL"] if stdbuf else []), *args]


def tie_to_parent() -> list[str]:
    """``setpriv --pdeathsig KILL``: a QEMU whose Python dies hard (a crashed kernel) must not live on.

    The signal follows the thread that started the process, so it is only set from the main thread,
    where notebook cells run; QEMUs started from other threads rely on the Lab's orderly end.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return []
    return [setpriv, "--pdeathsig", "KILL", "--"]


class QemuProcess:
    """One QEMU process: its output logs, its liveness, and an orderly end."""

    def __init__(self, args: list[str], cwd: Path, log_stem: Path) -> None:
        self.args = args
        self.stdout_path = log_stem.with_suffix(".out")
        self.stderr_path = log_stem.with_suffix(".log")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(
                args, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self._stdout_seen = 0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stderr_tail(self, lines: int = 5) -> str:
        """The last lines QEMU wrote to stderr, to explain why it stopped."""
        try:
            text = self.stderr_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line for line in text[-lines:] if "host doesn't support requested feature" not in line)

    def new_stdout(self) -> str:
        """Text QEMU printed on stdout since the last call (HMP qemu-io results land here)."""
        with open(self.stdout_path, "rb") as out:
            out.seek(self._stdout_seen)
            data = out.read()
        self._stdout_seen += len(data)
        return data.decode(errors="replace")

    def gone_error(self, what: str) -> QEMUGone:
        """The error to raise when this process is found dead."""
        code = self.popen.poll()
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        tail = self.stderr_tail()
        return QEMUGone(
            what,
            f"QEMU (pid {self.pid}) is no longer running ({how})" + (f"; it said: {tail}" if tail else ""),
            "launch a new one with lab.launch(...)",
        )

    def stopped(self) -> bool:
        """True while the process is stopped (SIGSTOP, a debugger): it answers nothing and cannot exit by itself."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        return stat.rpartition(")")[2].split()[:1] in (["T"], ["t"])

    def terminate(self, grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; reaps the process either way.

        SIGTERM is followed by SIGCONT, so that a stopped QEMU wakes up to act on it instead of using up the grace.
        """
        if not self.alive():
            self.popen.wait()
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                self.popen.send_signal(sig)
                if sig == signal.SIGTERM:
                    self.popen.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                break
            try:
                self.popen.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def wait_exit(self, timeout: float) -> bool:
        """Wait for the process to exit by itself; True when it did (a stopped one cannot: False at once)."""
        if self.stopped():
            return False
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
