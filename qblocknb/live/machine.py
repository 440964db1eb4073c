"""One QEMU as a Python object: QMP commands as methods, jobs, chain, guest I/O.

``vm.block_stream(device="node-D", job_id="job0")`` sends ``block-stream``
with ``{"device": "node-D", "job-id": "job0"}`` and returns a ``Job``; any
other QMP command returns QEMU's answer.  See ``qblocknb.qmp.session`` for the
transport and ``qblocknb.live.jobs`` for what a Job can do.
"""

from __future__ import annotations

import contextlib
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from qblocknb.errors import Error
from qblocknb.live import images
from qblocknb.live.blockstate import BlockState
from qblocknb.live.chainreader import ChainReader, Checked
from qblocknb.live.diagnose import diagnose
from qblocknb.live.graphreader import read_block_graph
from qblocknb.live.guestio import GuestIO
from qblocknb.live.jobregistry import JobRegistry
from qblocknb.live.jobs import Job
from qblocknb.live.preflight import check_command
from qblocknb.live.process import QemuProcess
from qblocknb.live.schema import Schema
from qblocknb.live.virshlines import VirshLines
from qblocknb.model.blockgraph import BlockGraph
from qblocknb.model.chain import Chain, RetiredImage, device_id, disks, pick_disk
from qblocknb.model.listeners import Listeners
from qblocknb.model.paths import resolve
from qblocknb.model.predict import SNAPSHOT, job_ends
from qblocknb.model.qmpshell import parse_line
from qblocknb.model.vocabulary import JOB_COMMANDS, VERB_COMMANDS
from qblocknb.qmp.session import Session

if TYPE_CHECKING:
    from qblocknb.live.guest import Guest


class Machine:
    """A QEMU reached over QMP; launched by a Lab or attached with ``qb.connect``."""

    def __init__(
        self, session: Session, process: QemuProcess | None = None, cwd: Path | None = None, device: str | None = None
    ) -> None:
        self.session = session
        self.process = process
        self.cwd = cwd
        self._device = device
        self.guest_io = GuestIO(self, getattr(session, "send_fd", None))  # a socket session can hand QEMU a descriptor
        self.guest: Guest | None = None  # a booted guest OS (lab.launch(..., guest=True)), else none
        self.state = BlockState(session)
        self.schema = Schema(session)
        self.monitoring = True  # running jobs are sampled every 20 ms for their timelines
        self.registry = JobRegistry(session, self._new_job, monitoring=lambda: self.monitoring)
        self.reader = ChainReader(self.state, self.registry)
        self.virsh = VirshLines(session, self.reader, self.registry)  # vm.history's virsh column, forms, plans
        self.listeners = Listeners()  # each QMP event as a dict, on the session thread
        self.diagnose = partial(diagnose, self)  # vm.diagnose() is qb.diagnose(vm): what is wrong, and the fixes
        session.listeners.register(self._on_event)

    def __repr__(self) -> str:
        return f"<Machine {self.session.name} ({f'pid {self.pid}' if self.process else self.session.where})>"

    # -- liveness ---------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.session.connected and (self.process is None or self.process.alive())

    def gone_error(self, what: str) -> Error | None:
        """The error to raise if QEMU is gone, else None."""
        return gone_error(self.process, self.session, what)

    # -- disks ------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        """The disk that commands and views use when none is named: the one set, else QEMU's only disk."""
        if self._device is not None:
            return self._device
        return device_id(pick_disk(self.state.read()[0], None))

    @device.setter
    def device(self, name: str | None) -> None:
        self._device = None if name is None else device_id(pick_disk(self.state.read()[0], name))

    @property
    def disks(self) -> list[str]:
        """The disks QEMU has (devices with a medium), by the names ``vm.device`` takes."""
        return [device_id(entry) for entry in disks(self.state.read()[0])]

    def disk(self, device: str | None = None) -> dict:
        """The ``query-block`` entry of ``device`` (any of its names), else of ``vm.device``."""
        return pick_disk(self.state.read()[0], device or self._device)

    def query(self, command: str, arguments: dict | None = None) -> Any:
        """A command sent quietly: not in ``vm.history`` (what views and checks read)."""
        return self.send(command, arguments, record=False)

    def send(
        self, command: str, arguments: dict | None = None, timeout: float | None = None, record: bool = True
    ) -> Any:
        """Send one command as it is (no checks); anything but a ``query-*`` marks the block graph as changed."""
        if command.startswith("query-"):
            return self.session.execute(command, arguments, timeout=timeout, record=record)
        self.state.changed()
        try:
            return self.session.execute(command, arguments, timeout=timeout, record=record)
        finally:
            self.state.changed()

    # -- commands ---------------------------------------------------------------------------
    @property
    def commands(self) -> set[str]:
        """Every QMP command this QEMU knows (``query-commands``)."""
        return self.schema.commands

    def has_command(self, name: str) -> bool:
        return name in self.schema.commands

    def accepts(self, command: str, argument: str) -> bool:
        """True when QEMU's schema lists ``argument`` for ``command``: feature detection without version numbers."""
        return argument in self.schema.arguments(command)

    def deprecated(self, command: str) -> bool:
        """True when QEMU's schema marks ``command`` deprecated (``block-job-complete`` from 10.1, for one)."""
        return self.schema.deprecated(command)

    def execute(
        self, command: str, arguments: dict | None = None, /, *, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Send any QMP command; keyword names use ``_`` for ``-``. Job commands return a Job."""
        if command not in self.commands:
            raise self.schema.unknown(command)
        merged = self.schema.arguments_for(command, arguments, kwargs)
        check_command(self, command, merged)
        if command in JOB_COMMANDS:
            return self._start_job(command, merged, timeout)
        job = self.registry.running(merged.get("device") or merged.get("id")) if command in VERB_COMMANDS else None
        if job is not None:
            return job.send_verb(VERB_COMMANDS[command], command, merged, timeout)
        if command == SNAPSHOT:
            after = self._checked(command, merged).after
            result = self.send(command, merged, timeout)
            self.state.expect(after)  # the next command is checked against it without asking QEMU
            return result
        return self.send(command, merged, timeout)

    def shell(self, line: str) -> Any:
        """Run one line of qmp-shell syntax: ``block-stream device=node-D job-id=job0``."""
        command, arguments = parse_line(line)
        return self.execute(command, arguments)

    def hmp(self, command_line: str) -> str:
        """Run an HMP command and return its text."""
        return self.send("human-monitor-command", {"command-line": command_line})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        for command in (name.replace("_", "-"), name):
            if command in self.commands:
                return partial(self.execute, command)
        raise self.schema.unknown(name.replace("_", "-"))

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | {c.replace("-", "_") for c in self.schema.known})

    # -- jobs -------------------------------------------------------------------------------
    def _start_job(self, command: str, arguments: dict, timeout: float | None = None) -> Job:
        job = self.expect_job(command, arguments)
        try:
            self.send(command, arguments, timeout)
        except Exception:
            self.forget_job(job)
            raise
        return job

    def expect_job(self, command: str, arguments: dict) -> Job:
        """Check and register the Job that ``command`` is about to start (a transaction starts several at once).

        Fills in ``job-id`` when missing; call ``forget_job`` if the command is then refused.
        """
        arguments.setdefault("job-id", self.registry.next_id())
        chain = self._checked(command, arguments).chain
        source, target = job_ends(chain, JOB_COMMANDS[command], arguments)
        job = self._new_job(arguments["job-id"], command, arguments, chain, source, target)
        self.registry.add(job)
        return job

    def _checked(self, command: str, arguments: dict) -> Checked:
        return self.virsh.check(command, arguments, self._device, {j.id for j in self.registry.active()}, self.cwd)

    def _new_job(self, job_id: str, command: str, arguments: dict, chain: Chain | None, *ends: str | None) -> Job:
        """A Job that sends through this machine and knows when it is gone."""
        return Job(
            job_id,
            command,
            arguments,
            chain,
            *ends,
            send=self.send,
            gone=self.gone_error,
            deprecated=lambda old: self.deprecated(old) and self.has_command(old.replace("block-job-", "job-")),
            has_command=self.has_command,
        )

    def forget_job(self, job: Job) -> None:
        """Drop a registered Job whose command QEMU refused."""
        self.registry.forget(job)

    def next_job_id(self) -> str:
        """``job0``, ``job1``, ...: the first id no job of this session has used."""
        return self.registry.next_id()

    def job(self, job_id: str) -> Job:
        """The Job with this id."""
        return self.registry.find(job_id)

    @property
    def job_list(self) -> list[Job]:
        """Every job of this session, in the order they started."""
        return self.registry.job_list

    @property
    def jobs(self) -> pd.DataFrame:
        """One row per job of this session: type, start, end, duration, bytes, mean rate, outcome."""
        return self.registry.frame()

    @property
    def retired(self) -> list[RetiredImage]:
        """Images that ended jobs took out of the chain, with the seed's rule on whether they are still valid."""
        return self.registry.retired

    def _on_event(self, event: dict) -> None:
        self.state.changed()  # any event may come with a new graph: a job step, a pivot, a device gone
        self.registry.route(event)
        self.listeners.notify(event)

    # -- chain ------------------------------------------------------------------------------
    def chain(self, device: str | None = None) -> Chain:
        """The current backing chain of ``device`` (default ``vm.device``), with jobs and retired images."""
        return self.reader.chain(device or self._device)

    def block_graph(self, source: str | None = None) -> BlockGraph:
        """Every node QEMU has open, roles and permissions included: what ``qb.render(vm, full=True)`` draws."""
        return read_block_graph(self, source)

    # -- guest I/O and verification ---------------------------------------------------------
    def write(self, device: str | None, offset: int | str, length: int | str, pattern: int = 0xCD) -> None:
        """Write as the guest would, through the device's own backend (HMP ``qemu-io -d``); any disk, any QEMU."""
        self.guest_io.write(device, offset, length, pattern)

    def read_matches(self, device: str | None, offset: int | str, length: int | str, pattern: int) -> bool:
        """Read through the device inside QEMU; True when the range holds ``pattern``."""
        return self.guest_io.read_matches(device, offset, length, pattern)

    def flush(self) -> None:
        """Make the files on disk tell the truth for readers outside QEMU; see ``GuestIO.flush``."""
        self.guest_io.flush()

    def verify(self, expected: list[tuple[int | str, int | str, int]], image: str | Path | None = None) -> bool:
        """Check that each ``(offset, length, pattern)`` reads back as the guest sees it (or from ``image``)."""
        return self.guest_io.verify(expected, image)

    def compare(self, other: str | Path) -> images.Comparison:
        """``qemu-img compare`` the guest view with another image."""
        return self.guest_io.compare(other)

    def host_path(self, file: str | Path) -> Path:
        """Where a file name as QEMU knows it (maybe relative to its working folder) lies on this host."""
        return resolve(file, self.cwd)

    # -- history and lifecycle --------------------------------------------------------------
    @property
    def history(self) -> pd.DataFrame:
        """Every command sent by the user: time, name, arguments, duration, outcome."""
        return self.session.history.frame()

    def quit(self, timeout: float = 5.0) -> None:
        """End QEMU in order: QMP ``quit``, then SIGTERM, then SIGKILL."""
        if self.alive() and not (self.process is not None and self.process.stopped()):  # a stopped one never answers
            with contextlib.suppress(Error):  # QEMU may close the socket before it answers
                self.session.execute("quit", timeout=timeout)
        self.session.close()
        if self.process is not None and not self.process.wait_exit(timeout):
            self.process.terminate()


def gone_error(process: QemuProcess | None, session: Session, what: str) -> Error | None:
    """Why ``what`` cannot be done because QEMU is gone (its exit, or the closed connection), else None."""
    if process is not None and not process.alive():
        return process.gone_error(what)
    return None if session.connected else session.closed_error(what)
