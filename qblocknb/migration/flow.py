"""Live storage migration over NBD between two QEMUs: the seed's steps, in the order that works.

The seed mirrors the active layer to the destination's NBD export and then
stops; between READY and ``block-job-cancel`` the VM state itself must move
(``migrate``), or the destination has a disk but no guest.  Each step is one
call, with the seed's command names, and is recorded::

    import qblocknb as qb
    dst = qb.launch_destination(lab, src)            # target-disk.qcow2 on contents-of-a-b-c.qcow2, -incoming
    m = qb.migrate_storage(src, dst)                 # or StorageMigration(src, dst) and its steps one by one
    m.steps                                          # step, machine, command, started, duration_s, outcome, detail
    m.job.timeline, m.progress, m.timeline           # the mirror, the migration, and both on one clock

NBD without TLS is unauthenticated: whoever reaches the port can read and
overwrite the exported disk.  The listener binds to the address given (loopback
by default); pass ``tls=folder`` (see ``qblocknb.migration.tls``) to require x509 on the NBD
connection and the migration stream.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

import pandas as pd

from qblocknb.errors import Error, InputError
from qblocknb.live.tools import run
from qblocknb.migration.explain import authority, diagnose, side_state
from qblocknb.migration.record import MigrationRecord
from qblocknb.migration.tls import add_credentials
from qblocknb.model.listeners import Listeners
from qblocknb.model.nbd import NBD_PORT, address, is_ipv6, is_nbd, mirror_target, tcp_uri
from qblocknb.model.sizes import parse_size

if TYPE_CHECKING:
    from qblocknb.live.jobs import Job
    from qblocknb.live.lab import Lab
    from qblocknb.live.machine import Machine

POLL = 0.05
TLS_ID = "tls0"
# (method, machine, seed command, what it does); run() calls them in this order.
PLAN = (
    ("start_server", "destination", "nbd-server-start", "start the NBD server"),
    ("export_target", "destination", "nbd-server-add", "export the target node, writable"),
    ("mirror", "source", "drive-mirror", "mirror the active layer to the NBD export (sync=top)"),
    ("wait_ready", "source", "BLOCK_JOB_READY", "wait until the mirror is READY"),
    ("migrate", "source", "migrate", "move the VM state (the step the seed leaves out)"),
    ("wait_migrated", "source", "query-migrate", "wait until the migration is completed"),
    ("cancel_mirror", "source", "block-job-cancel", "end the mirror; the target stays a consistent copy"),
    ("stop_server", "destination", "nbd-server-stop", "stop the NBD server"),
    ("cont", "destination", "cont", "resume the guest on the destination"),
)
STEPS = {entry[0]: entry for entry in PLAN}
STEP_NUMBERS = {entry[0]: number for number, entry in enumerate(PLAN, 1)}


class MigrationError(Error):
    """A step of a live storage migration failed; ``migration`` is the flow, to inspect or ``abort()``."""

    def __init__(self, migration: StorageMigration, step: str, what: str, why: str, todo: str) -> None:
        self.migration, self.step = migration, step
        super().__init__(what, why, todo)


def free_port(host: str) -> int:
    """A port nobody listens on at ``host``; NBD's own port when ``host`` is not an address of this namespace."""
    family = socket.AF_INET6 if is_ipv6(host) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, 0))
        except OSError:
            return NBD_PORT
        return probe.getsockname()[1]


def launch_destination(
    lab: Lab,
    source: Machine,
    host: str = "127.0.0.1",
    name: str = "destination",
    target: str = "target-disk.qcow2",
    node_name: str = "node-TargetDisk",
    wrapper: tuple[str, ...] | list[str] = (),
    contents: str | None = None,
) -> Machine:
    """The seed's destination: ``target`` on a copy of the source's backing chain, waiting with ``-incoming``.

    The copy (``contents``, by default ``contents-of-a-b-c.qcow2`` for the seed's chain) stands for what
    the destination host already has "by other means" (cp, rsync, a storage array).
    ``lab`` is the destination host's folder (it may be the source's lab); ``wrapper`` prefixes QEMU's command
    line, e.g. ``["ip", "netns", "exec", "ns-dst"]`` for a destination in another network namespace.
    """
    chain = source.chain()
    source.flush()  # the copy must see what QEMU cached
    if len(chain) > 1:
        below = chain.images[:-1]
        contents = contents or "contents-of-" + "-".join(PurePath(image.name).stem for image in below) + ".qcow2"
        origin = source.host_path(below[-1].file)
        what = f"copying the backing chain of {chain.active.name} to {contents}"
        run("qemu-img", "convert", "-U", "-O", "qcow2", str(origin), str(lab.file(contents)), what=what)
        lab.create(target, backing=contents)
    else:
        lab.create(target, size=chain.active.virtual_size)
    return lab.launch(target, node_name=node_name, incoming=tcp_uri(host, 0), name=name, wrapper=wrapper)


class StorageMigration:
    """The seed's steps 1-6 plus ``migrate``, between a running source and a destination waiting with ``-incoming``.

    Call ``run()`` for all of them, or the step methods one by one (a tutorial
    shows each).  ``on_step(migration, row)`` is called before and after every
    step, from the calling thread, so a view may query both QEMUs and redraw.
    """

    def __init__(
        self,
        source: Machine,
        destination: Machine,
        host: str = "127.0.0.1",
        nbd_port: int | None = None,
        device: str | None = None,
        export_command: str = "auto",
        writable: bool = True,
        speed: int | str = 0,
        tls: str | Path | None = None,
        on_step: Callable[[StorageMigration, dict], None] | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.source, self.destination = source, destination
        self.host = host
        self.nbd_port = nbd_port or free_port(host)
        self.device = device or source.chain().active.node_name
        self.export = destination.chain().active.node_name
        self.export_command = _export_command(destination, export_command)
        self.writable, self.speed, self.timeout = writable, parse_size(speed), timeout
        self.tls = Path(tls) if tls else None
        self.listeners = Listeners()  # called with (migration, step row) after each step
        if on_step is not None:
            self.listeners.register(on_step)
        self.incoming = _incoming_uri(destination, host)
        self.job: Job | None = None
        self.done: list[str] = []
        self.server_running = False
        self.started = time.monotonic()
        self.record = MigrationRecord(self.started)

    def __repr__(self) -> str:
        return f"<StorageMigration {self.device} -> nbd {self.address} + {self.incoming}, done {self.done}>"

    @property
    def address(self) -> str:
        return address(self.host, self.nbd_port)

    # -- the whole flow ---------------------------------------------------------------------
    def run(self) -> StorageMigration:
        """Every step not done yet, in order; raises MigrationError naming the step that failed."""
        if self.tls and "tls" not in self.done:
            self.load_tls()
        for method, *_ in PLAN:
            if method not in self.done:
                getattr(self, method)()
        return self

    # -- steps ------------------------------------------------------------------------------
    def load_tls(self) -> None:
        """``object-add tls-creds-x509`` on both sides, and TLS for the migration stream too."""
        if self.tls is None:
            raise InputError("there are no TLS credentials to load", "tls= was not given", "pass tls=folder")
        with self._step("tls", "both", "object-add", "load x509 credentials on both sides"):
            add_credentials(self.destination, self.tls, "server", TLS_ID)
            add_credentials(self.source, self.tls, "client", TLS_ID)
            self.destination.migrate_set_parameters(tls_creds=TLS_ID)
            self.source.migrate_set_parameters(tls_creds=TLS_ID, tls_hostname=self.host)

    def start_server(self) -> None:
        """Step 1 (destination): ``nbd-server-start`` on the given address."""
        addr = {"type": "inet", "data": {"host": self.host, "port": str(self.nbd_port)}}
        extra = {"tls-creds": TLS_ID} if self.tls else {}
        with self._step("start_server"):
            self.destination.nbd_server_start(addr=addr, **extra)
            self.server_running = True

    def export_target(self) -> None:
        """Step 2 (destination): export the target node; ``writable: true`` is what the seed's JSON misses."""
        with self._step("export_target", command=self.export_command):
            if self.export_command == "block-export-add":
                self.destination.block_export_add(
                    type="nbd", id=self.export, node_name=self.export, name=self.export, writable=self.writable
                )
            else:
                self.destination.nbd_server_add(device=self.export, writable=self.writable)

    def mirror(self) -> Job:
        """Step 3 (source): ``drive-mirror sync=top mode=existing`` to the ``nbd:`` target."""
        with self._step("mirror"):
            self.job = self.source.drive_mirror(
                device=self.device, target=self.target, sync="top", mode="existing", speed=self.speed, **self._format()
            )
        return self.job

    def wait_ready(self) -> None:
        """Step 4 (source): wait for ``BLOCK_JOB_READY``."""
        with self._step("wait_ready"):
            self._job().wait_ready(timeout=self.timeout)

    def migrate(self) -> None:
        """Step 5 (source): ``migrate`` to the destination's ``-incoming`` address, once the mirror is READY."""
        job = self._job()
        if not job.ready:
            raise self._failure(
                "migrate", "migrate", "source", f"the mirror job is {job.status}, not READY", "BLOCK_JOB_READY"
            )
        with self._step("migrate"):
            self.source.migrate(uri=self.incoming)

    def wait_migrated(self) -> None:
        """Step 6 (source): poll ``query-migrate`` until it says completed, keeping each sample."""
        with self._step("wait_migrated"):
            deadline = time.monotonic() + self.timeout
            while True:
                info = self.source.query("query-migrate")
                self.record.sample(info)
                status = info.get("status", "none")
                if status == "completed":
                    return
                if status in ("failed", "cancelled", "none"):
                    raise Error(
                        "the VM state did not migrate", info.get("error-desc") or f"query-migrate says {status}"
                    )
                if time.monotonic() > deadline:
                    raise Error(
                        "the VM state did not finish migrating",
                        f"query-migrate still says {status} after {self.timeout:.0f} s",
                    )
                time.sleep(POLL)

    def cancel_mirror(self) -> None:
        """Step 7 (source): ``block-job-cancel`` after READY ends the mirror COMPLETED, the target consistent."""
        with self._step("cancel_mirror"):
            self._job().cancel().wait(timeout=self.timeout)

    def stop_server(self) -> None:
        """Step 8 (destination): ``nbd-server-stop`` (also removes the export)."""
        with self._step("stop_server"):
            self.destination.nbd_server_stop()
            self.server_running = False

    def cont(self) -> None:
        """Step 9 (destination): ``cont``; the guest now runs there."""
        with self._step("cont"):
            self.destination.cont()

    def abort(self) -> list[str]:
        """Undo what can be undone after a failure; the source stays authoritative. Returns what was done.

        The undone steps leave ``done``, so ``run()`` afterwards starts them again (a retry).
        """
        undone = []
        if self.source.alive() and self.source.query("query-migrate").get("status") in (
            "setup",
            "active",
            "pre-switchover",
            "device",
        ):
            self.source.migrate_cancel()
            undone.append("migrate_cancel on the source")
        if self.job is not None and not self.job.ended:
            self.job.cancel(force=True).wait(timeout=self.timeout)
            undone.append(f"block-job-cancel force=true of {self.job.id}")
        if self.job is not None:
            self._undo("mirror", "wait_ready", "migrate", "wait_migrated")
        if self.server_running and self.destination.alive():
            self.destination.nbd_server_stop()
            self.server_running = False
            undone.append("nbd-server-stop on the destination")
            self._undo("start_server", "export_target")
        return undone

    def _undo(self, *methods: str) -> None:
        self.done = [method for method in self.done if method not in methods]

    # -- helpers ----------------------------------------------------------------------------
    @property
    def target(self) -> str:
        """The mirror's target: the seed's ``nbd:HOST:PORT:exportname=NODE``, or ``json:`` when TLS or IPv6 need it."""
        return mirror_target(self.host, self.nbd_port, self.export, TLS_ID if self.tls else None)

    def _format(self) -> dict:
        """``format=raw`` for an ``nbd:`` target: never let QEMU probe a format from data the guest wrote."""
        return {"format": "raw"} if is_nbd(self.target) else {}

    def _job(self) -> Job:
        if self.job is None:
            raise InputError("there is no mirror yet", "step 3 (drive-mirror) has not run", "call mirror() first")
        return self.job

    def _failure(self, method: str, command: str, machine: str, cause: str, rule: str) -> MigrationError:
        diagnosis = diagnose(rule, cause, self.export, self.incoming_address if "migrat" in rule else self.address)
        migrated = "wait_migrated" in self.done
        states = "; ".join(
            [
                side_state(self.source, "source"),
                side_state(self.destination, "destination", "NBD server running" if self.server_running else ""),
                authority(migrated, "cont" in self.done),
            ]
        )
        return MigrationError(
            self,
            method,
            f"live storage migration stopped at step {_number(method)} ({command} on the {machine})",
            f"{diagnosis.why} ({cause})",
            f"{diagnosis.todo}. Now {states}; error.migration.abort() cancels the mirror and stops the NBD server",
        )

    @property
    def incoming_address(self) -> str:
        return self.incoming.removeprefix("tcp:")

    def _notify(self, row: dict) -> None:
        self.listeners.notify(self, dict(row))

    @contextlib.contextmanager
    def _step(self, method: str, machine: str = "", command: str = "", what: str = "") -> Iterator[None]:
        """One step as a row of ``steps``: running, then ok, or failed with an explanation of both sides."""
        plan = STEPS.get(method, (method, machine, command, what))
        machine, command, what = machine or plan[1], command or plan[2], what or plan[3]
        row = self.record.begin(_number(method), what, machine, command)
        self._notify(row)
        try:
            yield
        except Error as error:
            self._notify(self.record.end(row, "failed", error.why or str(error)))
            raise self._failure(method, command, machine, error.why or str(error), command) from error
        except BaseException as error:  # an interrupt or a bug: the row must not say "running" forever
            self._notify(self.record.end(row, "failed", type(error).__name__))
            raise
        self.done.append(method)
        self._notify(self.record.end(row, "ok"))

    # -- frames -----------------------------------------------------------------------------
    @property
    def steps(self) -> pd.DataFrame:
        """One row per step run (a retried step appears again): number in the plan, name, machine, command,
        started, duration_s, outcome (running, ok or failed) and the failure's detail."""
        return self.record.steps

    @property
    def progress(self) -> pd.DataFrame:
        """The migration's ``query-migrate`` samples: seconds since the flow began, RAM bytes, throughput."""
        return self.record.progress

    @property
    def timeline(self) -> pd.DataFrame:
        """The mirror and the migration on one clock (seconds since the flow began), bytes done of total."""
        return self.record.timeline(self.job)


def _number(method: str) -> int:
    """A step's number in the plan (loading TLS credentials comes first, as step 0)."""
    return STEP_NUMBERS.get(method, 0)


def _export_command(destination: Machine, choice: str) -> str:
    """The seed's ``nbd-server-add`` while QEMU still has it, else ``block-export-add``; detected, never by version."""
    if choice == "auto":
        return "nbd-server-add" if destination.has_command("nbd-server-add") else "block-export-add"
    if not destination.has_command(choice):
        raise InputError(f"the destination has no command '{choice}'", "", "pass export_command='auto'")
    return choice


def _incoming_uri(destination: Machine, host: str) -> str:
    """Where the destination waits for the migration stream (its real port, even when launched with port 0)."""
    status = destination.query("query-status")["status"]
    addresses = destination.query("query-migrate").get("socket-address", [])
    if status != "inmigrate" or not addresses:
        raise InputError(
            "the destination is not waiting for an incoming migration",
            f"it is {status}",
            "launch it with qb.launch_destination(lab, src) or lab.launch(..., incoming='tcp:HOST:0')",
        )
    first = addresses[0]
    listening = first.get("host", host)
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(listening).is_unspecified:
            listening = host
    return tcp_uri(listening, first["port"])


def migrate_storage(source: Machine, destination: Machine, **options: object) -> StorageMigration:
    """Run the whole live storage migration; see ``StorageMigration`` for the options."""
    return StorageMigration(source, destination, **options).run()  # type: ignore[arg-type]
