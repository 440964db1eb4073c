"""A tiny Linux guest that writes its own data while block jobs run, and checks it afterwards.

``lab.launch(image, guest=True)`` boots the kernel and initramfs of
``qblocknb.live.guestimage`` with the image as ``/dev/vda``.  The guest's serial
console (ttyS0) carries a shell, driven by ``vm.guest.shell("uname -r")``;
its second serial port (ttyS1) carries the writer's progress: ``S i r`` before
and ``W i r`` after record ``i`` of round ``r`` reached the disk.  The host
stamps each line with its own clock, so a job's start can be set against the
writes: ``point_in_time(t)`` says which round of each record an image taken at
``t`` may hold, and ``expected_record`` rebuilds that round's bytes::

    >>> expected_record(3, 1, 64)[:54]
    b'qblocknb record 3 round 1\\nqblocknb record 3 round 1\\nqb'
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from qblocknb.errors import Error, InputError, QEMUGone, Timeout
from qblocknb.live.guestimage import BootFiles
from qblocknb.live.process import kvm_usable
from qblocknb.model.sizes import human_size, parse_size

BOOT_TIMEOUT = 120.0  # TCG boots a Debian kernel in seconds on a desktop, far slower on a loaded CI runner
CONNECT_TIMEOUT = 10.0
READY = "__qbn_READY"
STOP_FILE = "/tmp/qbn-stop"
SECTOR = 512
POLL = 0.1

Gone = Callable[[str], "Error | None"]


class GuestError(Error):
    """A command in the guest failed, or the guest does not answer."""


def qemu_args(boot: BootFiles, console: Path, progress: Path, console_log: Path) -> list[str]:
    """The guest's part of the QEMU command line: kernel, initramfs, and both serial ports on unix sockets."""

    def chardev(name: str, path: Path, extra: str = "") -> list[str]:
        return [
            "-chardev",
            f"socket,id={name},path={_escaped(path)},server=on,wait=off{extra}",
            "-serial",
            f"chardev:{name}",
        ]

    return [
        "-kernel",
        str(boot.kernel),
        "-initrd",
        str(boot.initrd),
        "-append",
        "console=ttyS0 quiet loglevel=1 panic=-1",
        "-no-reboot",  # a panicking guest ends QEMU, so a waiting shell() sees it gone instead of timing out
        *chardev("console", console, f",logfile={_escaped(console_log)}"),
        *chardev("progress", progress),
    ]


def _escaped(path: Path) -> str:
    return str(path).replace(",", ",,")


def guest_accel(accel: str | None) -> str | None:
    """The accelerator for a guest: as asked, else TCG where /dev/kvm is PVM, else the usual choice.

    PVM (``kvm_pvm``, found on nested cloud VMs) opens like KVM but runs only kernels built as PVM guests: a
    stock Debian kernel had not left its decompressor after a minute there, where TCG boots it in seven seconds.
    """
    accel = accel or os.environ.get("QBLOCKNB_ACCEL") or None
    if accel is None and kvm_usable() and Path("/sys/module/kvm_pvm").exists():
        return "tcg"
    return accel


def expected_record(record: int, round_: int, size: int) -> bytes:
    """The bytes the writer puts in ``record`` in round ``round_``: its header line repeated, cut to ``size``."""
    line = f"qblocknb record {record} round {round_}\n".encode()
    return (line * (size // len(line) + 1))[:size]


class Mismatch(NamedTuple):
    """A record that does not hold what it may hold."""

    record: int
    offset: int
    expected_round: int | None


@dataclass
class WriterReport:
    """What the writer did, and whether the guest reads every written record back as written."""

    records_written: int
    rounds: int
    records_checked: int
    mismatches: list[Mismatch] = field(default_factory=list)
    failure: str = ""

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.failure

    def __str__(self) -> str:
        rounds = "1 full round" if self.rounds == 1 else f"{self.rounds} full rounds"
        done = f"the guest wrote {self.records_written} records ({rounds})"
        if self.failure:
            return f"{done}, then a write failed: {self.failure}."
        if not self.mismatches:
            return f"{done} and read all {self.records_checked} written records back as written."
        shown = ", ".join(f"record {m.record} at offset {m.offset} (round {m.expected_round})" for m in self.mismatches)
        return f"{done}, but {len(self.mismatches)} of {self.records_checked} read back wrong: {shown}."


@dataclass(frozen=True)
class _Writer:
    size: int
    record: int
    offset: int

    @property
    def count(self) -> int:
        return self.size // self.record


class SerialLine:
    """One guest serial port on a unix socket; a thread collects what the guest writes."""

    def __init__(self, path: Path, on_line: Callable[[str, float], None] | None = None) -> None:
        self.path = path
        self.text = ""
        self.closed = False
        self._on_line = on_line
        self._partial = ""
        self._socket: socket.socket | None = None
        self._changed = threading.Condition()

    def connect(self, gone: Gone, timeout: float = CONNECT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            error = gone(f"connecting to the guest's serial port at {self.path}")
            if error is not None:
                raise error
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(str(self.path))
                break
            except OSError as exc:
                sock.close()
                if time.monotonic() > deadline:
                    raise GuestError(
                        f"cannot connect to the guest's serial port at {self.path}",
                        str(exc),
                        "check that QEMU was started with lab.launch(..., guest=True)",
                    ) from None
                time.sleep(0.05)
        self._socket = sock
        threading.Thread(target=self._read, name=f"serial {self.path.name}", daemon=True).start()

    def _read(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        assert self._socket is not None
        with self._socket:
            while data := self._receive():
                now = time.time()
                text = decoder.decode(data).replace("\r", "")
                with self._changed:
                    self.text += text
                    self._changed.notify_all()
                if self._on_line is not None:
                    *lines, self._partial = (self._partial + text).split("\n")
                    for line in lines:
                        self._on_line(line, now)
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def _receive(self) -> bytes:
        try:
            return self._socket.recv(65536)
        except OSError:
            return b""

    def send(self, data: bytes, gone: Gone, what: str) -> None:
        try:
            assert self._socket is not None
            self._socket.sendall(data)
        except OSError as exc:
            error = gone(what) or QEMUGone(what, f"the guest's serial port is closed ({exc})", "launch a new guest")
            raise error from None

    def wait_for(self, pattern: re.Pattern, start: int, timeout: float, gone: Gone, what: str) -> re.Match | None:
        """The first match at or after ``start``, or None after ``timeout``; a dead QEMU raises at once."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = pattern.search(self.text, start)
                if match is not None:
                    return match
                if self.closed:
                    raise self._closed_error(gone, what)
                error = gone(what)
                if error is not None:
                    raise error
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(min(POLL, remaining))

    @staticmethod
    def _closed_error(gone: Gone, what: str) -> Error:
        """QEMU's own account of its end when it comes within a second of the socket closing, else ours."""
        for _ in range(20):
            error = gone(what)
            if error is not None:
                return error
            time.sleep(0.05)
        return QEMUGone(what, "the guest's serial port was closed by QEMU", "launch a new guest")

    def forget(self, upto: int) -> None:
        """Drop text a finished command has consumed (the full console stays in the chardev's log file)."""
        with self._changed:
            self.text = self.text[upto:]


class Guest:
    """The guest of a machine launched with ``guest=True``: its shell, its writer, and their checks."""

    def __init__(self, gone: Gone, console: Path, progress: Path, console_log: Path, started: float) -> None:
        self._started = started  # time.monotonic() when QEMU was started
        self._gone = gone
        self.console_log = console_log
        self.console = SerialLine(console)
        self.progress = SerialLine(progress, self._on_progress)
        self.boot_seconds: float | None = None
        self._lock = threading.Lock()  # one command on the console at a time
        self._count = 0
        self._rows: list[tuple[float, str, int, int]] = []
        self._writer: _Writer | None = None
        self._writer_running = False
        self._writer_done = threading.Event()

    def __repr__(self) -> str:
        booted = f"booted in {self.boot_seconds:.1f} s" if self.boot_seconds is not None else "not booted"
        return f"<Guest {booted}, console log {self.console_log}>"

    # -- boot and shell ---------------------------------------------------------------------
    def boot(self, timeout: float = BOOT_TIMEOUT) -> float:
        """Connect to both serial ports and wait for the shell's ready marker; the seconds since QEMU started."""
        what = "booting the test guest"
        self.console.connect(self._gone)
        self.progress.connect(self._gone)
        deadline = time.monotonic() + timeout
        while READY not in self.console.text and READY not in self._log_text():
            error = self._gone(what)
            if error is not None:
                raise QEMUGone(what, f"{error.why}; its console ends with: {self.console_tail()}", error.todo)
            if time.monotonic() > deadline:
                raise Timeout(
                    f"the test guest did not reach its shell within {timeout:g} s",
                    f"its console ends with: {self.console_tail()}",
                    f"read the whole console in {self.console_log}, or pass a larger timeout",
                )
            time.sleep(POLL)
        self.boot_seconds = time.monotonic() - self._started
        return self.boot_seconds

    def _log_text(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")
        except OSError:
            return ""

    def console_tail(self, lines: int = 8) -> str:
        """The console's last lines, from the log QEMU keeps of it."""
        text = [line for line in self._log_text().replace("\r", "").splitlines() if line.strip()]
        return " | ".join(text[-lines:]) or "(nothing)"

    def shell(self, command: str, timeout: float = 30.0) -> str:
        """Run ``command`` in the guest's shell and return its output (stderr included); a failure raises."""
        with self._lock:
            self._count += 1
            n = self._count
            what = f"guest command '{command}'"
            start = len(self.console.text)
            # The quotes keep the markers from matching in an echo of the command line itself.
            line = f"echo __qbn_''S{n}\n{{ {command}\n}} </dev/null 2>&1\necho __qbn_''E{n} $?\n"
            self.console.send(line.encode(), self._gone, what)
            end = self.console.wait_for(re.compile(rf"__qbn_E{n} (\d+)\n"), start, timeout, self._gone, what)
            if end is None:
                self._interrupt(n, what, timeout)
            text = self.console.text[start : end.start()]
            output = text.split(f"__qbn_S{n}\n", 1)[-1].rstrip("\n")
            self.console.forget(end.end())
        status = int(end.group(1))
        if status != 0:
            raise GuestError(f"{what} failed with exit status {status}", output.strip()[-500:] or "it printed nothing")
        return output

    def _interrupt(self, n: int, what: str, timeout: float) -> None:
        """Ctrl-C the command that overran, check that the shell answers again, and raise."""
        self.console.send(b"\x03", self._gone, what)
        time.sleep(0.2)
        start = len(self.console.text)
        self.console.send(f"echo __qbn_''R{n}\n".encode(), self._gone, what)
        answered = self.console.wait_for(re.compile(rf"__qbn_R{n}\n"), start, 10.0, self._gone, what)
        if answered is not None:
            self.console.forget(answered.end())
        raise Timeout(
            f"{what} did not finish within {timeout:g} s",
            "it was interrupted with Ctrl-C" + ("" if answered else ", and the guest's shell does not answer since"),
            "pass a larger timeout= for slow commands" if answered else "launch a new guest",
        )

    # -- the writer -------------------------------------------------------------------------
    def start_writer(
        self, size: int | str = "8M", record: int | str = "64k", rate: float | None = None, offset: int | str = 0
    ) -> None:
        """Start writing numbered records over ``size`` bytes of /dev/vda from ``offset``, round after round.

        ``rate`` (records per second) throttles it; without it the writer goes as fast as the disk allows.
        """
        writer = _Writer(parse_size(size), parse_size(record), parse_size(offset))
        if self._writer_running:
            raise InputError(
                "the writer is already running", "a guest runs one writer at a time", "stop_writer() first"
            )
        if writer.record <= 0 or writer.count == 0:
            raise InputError(
                f"a writer with records of {record} over {size} writes nothing",
                "the region must hold at least one whole record",
                "pass a size at least as large as record",
            )
        disk = int(self.shell("blockdev --getsize64 /dev/vda"))
        if writer.offset + writer.count * writer.record > disk:
            raise InputError(
                f"the writer's region of {human_size(writer.size)} at offset {writer.offset} does not fit",
                f"/dev/vda holds {human_size(disk)}",
                "pass a smaller size or offset",
            )
        pause = int(1_000_000 / rate) if rate else 0
        self._rows = []
        self._writer = writer
        self._writer_done.clear()
        self.shell(f"rm -f {STOP_FILE}")
        # A subshell, so the writer is no job of the interactive shell (no "Done" lines in later output).
        self.shell(f"(qbn-writer {writer.size} {writer.record} {writer.offset} {pause} >/dev/null 2>&1 &)")
        self._writer_running = True

    def _on_progress(self, line: str, now: float) -> None:
        parts = line.split()
        if parts[:1] == ["X"]:
            self._writer_done.set()
        elif len(parts) == 3 and parts[0] in ("S", "W", "F") and parts[1].isdigit() and parts[2].isdigit():
            self._rows.append((now, parts[0], int(parts[1]), int(parts[2])))
            if parts[0] == "F":
                self._writer_done.set()

    @property
    def writer_progress(self) -> pd.DataFrame:
        """One row per progress line: host time ``t``, ``kind`` (S, W, or F for a failed write), record, round."""
        frame = pd.DataFrame(list(self._rows), columns=["t", "kind", "record", "round"])
        record = self._writer.record if self._writer else 0
        frame["bytes_written"] = (frame["kind"] == "W").cumsum() * record
        return frame

    def stop_writer(self, timeout: float = 60.0) -> WriterReport:
        """Stop the writer after its current record, then read every written record back through the guest.

        The guest syncs and drops its caches first, so what it reads comes from the virtual disk.
        """
        writer = self._writer
        if writer is None or not self._writer_running:
            raise InputError("there is no writer to stop", "start_writer() was not called", "start_writer() first")
        self.shell(f"touch {STOP_FILE}")
        deadline = time.monotonic() + timeout
        while not self._writer_done.wait(POLL):
            error = self._gone("stopping the guest's writer")
            if error is not None:
                raise error
            if time.monotonic() > deadline:
                raise Timeout(
                    f"the guest's writer did not stop within {timeout:g} s",
                    "it did not report its end on ttyS1",
                    "look at vm.guest.writer_progress, or pass a larger timeout",
                )
        self._writer_running = False
        sums = self.shell(
            "sync; echo 3 > /proc/sys/vm/drop_caches; i=0; "
            f"while [ $i -lt {writer.count} ]; do "
            f"dd if=/dev/vda bs={writer.record} count=1 skip=$(({writer.offset} + i * {writer.record})) "
            "iflag=skip_bytes,fullblock 2>/dev/null | md5sum; i=$((i + 1)); done",
            timeout=max(deadline - time.monotonic(), 30.0),
        ).split()[::2]
        if len(sums) != writer.count:
            raise GuestError(
                "reading the writer's records back in the guest went wrong",
                f"{len(sums)} checksums came back for {writer.count} records",
                "look at vm.guest.console_tail()",
            )
        rows = list(self._rows)
        failed = [f"record {i} of round {r}" for _, kind, i, r in rows if kind == "F"]
        mismatches, checked = [], 0
        for record, rounds in self.point_in_time(time.time(), slack=0).items():
            written = [r for r in rounds if r is not None]
            if not written:
                continue
            checked += 1
            wanted = {hashlib.md5(expected_record(record, r, writer.record)).hexdigest() for r in written}
            if sums[record] not in wanted:
                mismatches.append(Mismatch(record, writer.offset + record * writer.record, max(written)))
        records_written = sum(1 for row in rows if row[1] == "W")
        return WriterReport(records_written, records_written // writer.count, checked, mismatches, ", ".join(failed))

    # -- points in time ---------------------------------------------------------------------
    def point_in_time(self, start: float, end: float | None = None, slack: float = 0.05) -> dict[int, set[int | None]]:
        """For each record, the rounds an image taken between host times ``start`` and ``end`` may hold.

        That is the last round written before ``start``, and every round being written during the window
        (``S`` before its end, ``W`` after its start, or never). ``None`` stands for what the record held before
        the writer reached it. ``slack`` widens the window by the delay of the progress lines.
        """
        writer = self._require_writer()
        low, high = start - slack, (start if end is None else end) + slack
        last: dict[int, int | None] = dict.fromkeys(range(writer.count))
        started: dict[tuple[int, int], float] = {}
        finished: dict[tuple[int, int], float] = {}
        for t, kind, record, round_ in list(self._rows):  # a copy: the reader thread appends meanwhile
            if kind == "S":
                started[(record, round_)] = t
            elif kind == "W":
                finished[(record, round_)] = t
                if t < low:
                    last[record] = round_
        rounds: dict[int, set[int | None]] = {record: {value} for record, value in last.items()}
        for key, t in started.items():
            if t <= high and finished.get(key, float("inf")) >= low:
                rounds[key[0]].add(key[1])
        return rounds

    def check_copy(self, raw: Path | str, start: float, end: float | None = None) -> list[Mismatch]:
        """Records of a raw copy of the disk (a backup made raw) that hold no round ``point_in_time`` allows.

        A write in flight at the copy's moment may be torn: each 512-byte sector may come from any allowed round.
        """
        writer = self._require_writer()
        mismatches = []
        with open(raw, "rb") as data:
            for record, rounds in self.point_in_time(start, end).items():
                offset = writer.offset + record * writer.record
                data.seek(offset)
                if not _holds(data.read(writer.record), record, rounds, writer.record):
                    newest = max((r for r in rounds if r is not None), default=None)
                    mismatches.append(Mismatch(record, offset, newest))
        return mismatches

    def _require_writer(self) -> _Writer:
        if self._writer is None:
            raise InputError(
                "the guest's writer has not run", "there are no records to place in time", "start_writer()"
            )
        return self._writer


def _holds(data: bytes, record: int, rounds: set[int | None], size: int) -> bool:
    """True when ``data`` is, sector by sector, one of the allowed rounds (or, with None, no round of this record)."""
    if None in rounds and not data.startswith(f"qblocknb record {record} round ".encode()):
        return True
    options = [expected_record(record, r, size) for r in rounds if r is not None]
    return bool(options) and all(
        any(data[s : s + SECTOR] == option[s : s + SECTOR] for option in options) for s in range(0, size, SECTOR)
    )
