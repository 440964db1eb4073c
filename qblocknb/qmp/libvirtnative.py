"""A libvirt domain driven through libvirt's own API: no monitor passthrough, so no taint and no stale XML.

``qb.connect_libvirt("vm1")`` gives a ``Machine`` on a ``NativeSession``.  The Machine speaks QMP's
vocabulary (``vm.block_stream(device="vda", base_node="vda[1]")``); this session carries each of the seed's
intents out as libvirt does it (``qblocknb.model.virsh`` has the table: ``blockRebase``, ``blockCommit``,
``blockCopy``, ``backupBegin``, ``snapshotCreateXML``, ``blockJobAbort``...), so that libvirt records every
change of the chain and a restart boots what the guest last wrote.  It answers the Machine's queries from
libvirt's own state: ``query-block`` and ``query-named-block-nodes`` from the live XML
(``qblocknb.model.domainxml``: layers are named as virsh names them, ``vda[N]``), ``query-block-jobs``
from ``blockJobInfo`` (and ``jobStats`` for a backup), and turns libvirt's ``BLOCK_JOB_2`` events into
the QMP job events a ``Job`` follows (``qblocknb.model.libvirtevents``).

What libvirt cannot do (mirror ``sync=none``, backup ``sync=top``, a stream into an intermediate image,
pausing a block job, a guest write through the monitor) is refused with a sentence before anything is sent.
Reading what the guest sees (``vm.verify``, ``vm.read_matches``, ``vm.compare``) works through a pull-mode
``backupBegin``, whose point-in-time NBD export stands in for QEMU's ``block-export-add``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

from qblocknb.errors import InputError
from qblocknb.model.chain import Chain
from qblocknb.model.domainxml import Disk, block_devices, find_layer, named_nodes, parse_disks, sizes_from_stats
from qblocknb.model.libvirtevents import JOB_TYPES
from qblocknb.model.nativeschema import COMMANDS, schema
from qblocknb.model.virsh import Notes, translate
from qblocknb.qmp import loop
from qblocknb.qmp.libvirt import DEFAULT_TIMEOUT, LibvirtSession
from qblocknb.qmp.libvirtjobs import NativeJobs
from qblocknb.qmp.libvirtview import PullView

WATCH_INTERVAL = 0.5  # seconds between looks for block jobs that another client (virsh) started


class NativeSession(LibvirtSession):
    """A libvirt domain as a ``Machine`` uses a session, speaking libvirt's API instead of passing QMP through."""

    translates = True  # QMP's names, carried out in libvirt's terms: only its own schema says what it honours

    def __init__(self, domain: str, uri: str = "qemu:///system", timeout: float = DEFAULT_TIMEOUT) -> None:
        self.notes = Notes()  # blockdev-add'ed targets, and the checkpoint each bitmap stands for
        super().__init__(domain, uri, timeout)

    # -- connection -------------------------------------------------------------------------
    def _attach(self) -> None:
        libvirt = self.libvirt
        self.jobs = NativeJobs(libvirt, self.domain, self._emit, f"/var/log/libvirt/qemu/{self.name}.log")
        self.view = PullView(libvirt, self.domain, self.timeout)
        for event, callback in (
            (libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2, self._on_block_job),
            (
                libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED,
                lambda conn, dom, params, opaque: self.jobs.on_job_completed(params),
            ),
        ):
            self._callbacks.append(("lifecycle", self.conn.domainEventRegisterAny(self.domain, event, callback, None)))
        self._adopt_jobs()
        self._start_watcher()

    def _start_watcher(self) -> None:
        name = f"qblocknb-libvirt-watch-{self.name}"
        threading.Thread(target=self._watch, name=name, daemon=True).start()

    def _watch(self) -> None:
        """Look for jobs started by another client; libvirt announces a job's end, never its start."""
        while self.connected:
            with contextlib.suppress(Exception):  # a domain going away is reported by the lifecycle callback
                self._adopt_jobs()
            time.sleep(WATCH_INTERVAL)

    def _adopt_jobs(self) -> None:
        for disk in self._disks(sizes=False):
            self.jobs.adopt(disk.target, ready=disk.mirror is not None and disk.mirror.ready)

    def _on_lifecycle(self, conn: Any, dom: Any, event: int, detail: int, opaque: Any) -> None:
        """A stop ends the jobs that ran; a start (``virsh start`` after a destroy) makes the domain usable again:
        libvirt's API, unlike a QMP socket, outlives the QEMU process, so the same Machine follows the restart."""
        super()._on_lifecycle(conn, dom, event, detail, opaque)
        libvirt = self.libvirt
        if event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
            self.jobs.stopped(self._gone_why)
        elif event == libvirt.VIR_DOMAIN_EVENT_STARTED and not self._closed and self._gone_why.startswith("libvirt"):
            self._gone_why = ""
            self._start_watcher()

    def _on_block_job(self, conn: Any, dom: Any, disk: str, job_type: int, status: int, opaque: Any) -> None:
        self.jobs.on_block_job(disk, job_type == self.libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_BACKUP, status)

    def _emit(self, events: list[dict]) -> None:
        for event in events:
            loop.background_loop().call_soon_threadsafe(self.listeners.notify, event)

    @property
    def virsh_names(self) -> tuple[str, str]:
        """The domain and its first disk as virsh names them, for the virsh line of each command."""
        disks = self._disks(sizes=False)
        return self.name, disks[0].target if disks else "vda"

    def lacks(self, command: str) -> tuple[str, str]:
        """What and why, for a command this connection does not carry out (``Schema.unknown`` adds what to do)."""
        return (
            f"'{command}' has no form in libvirt's API",
            "a libvirt-native connection sends nothing to QEMU's monitor, so that libvirt's record stays true; "
            "qb.connect_libvirt(..., passthrough=True) sends raw QMP, but taints the domain and leaves its XML stale",
        )

    # -- commands ---------------------------------------------------------------------------
    def _answer(self, command: str, arguments: dict, timeout: float | None) -> object:
        """Carry one QMP-named command out through libvirt's API; what QEMU would have answered."""
        self._check_open(command)
        what = f"'{command}'"
        try:
            return self._in_worker(lambda: self._dispatch(command, arguments), timeout or self.timeout, what)
        except self.libvirt.libvirtError as exc:
            raise self.error_for(f"{what} could not be carried out", exc) from None

    async def execute_async(self, command: str, arguments: dict | None = None) -> object:
        """For coroutines on qblocknb's loop (the job sampler, the chain reader): a query, in a worker thread."""
        self._check_open(command)
        running = asyncio.get_running_loop()
        try:
            future = running.run_in_executor(self._executor, self._dispatch, command, arguments or {})
            return await asyncio.wait_for(future, self.timeout)
        except asyncio.TimeoutError:
            raise self._timeout(f"'{command}'", self.timeout) from None
        except RuntimeError as exc:  # the executor was shut down by close()
            raise self._closed_error(command, str(exc)) from None
        except self.libvirt.libvirtError as exc:
            raise self.error_for(f"'{command}' could not be carried out", exc) from None

    def _dispatch(self, command: str, arguments: dict) -> object:
        """One command, on a worker thread: a query answered from libvirt's state, or an intent carried out."""
        answer = {
            "query-commands": lambda: [{"name": name} for name in sorted(COMMANDS)],
            "query-qmp-schema": schema,
            "query-block": lambda: block_devices(self._disks()),
            "query-named-block-nodes": lambda: named_nodes(self._disks(), self._bitmaps()),
            "query-block-jobs": self.jobs.entries,
            "query-jobs": lambda: [_job_entry(entry) for entry in self.jobs.entries()],
            "query-status": self._status,
            "cont": lambda: self.domain.resume() and None,
            "stop": lambda: self.domain.suspend() and None,
            "quit": lambda: self.domain.destroy() and None,
            "nbd-server-start": lambda: self.view.server(arguments),
            "block-export-add": lambda: self.view.open(self._disks(False), arguments.get("node-name"), arguments),
            "nbd-server-add": lambda: self.view.open(self._disks(False), arguments.get("device"), arguments),
            "block-export-del": self.view.close,
            "nbd-server-stop": self.view.close,
        }.get(command)
        if answer is not None:
            return answer()
        if command == "human-monitor-command":
            raise _no_monitor(command)
        return self._carry_out(command, arguments)

    def _carry_out(self, command: str, arguments: dict) -> object:
        """A job, snapshot, checkpoint or verb: translated (refused before anything is sent), then one libvirt call."""
        _absolute(command, arguments)
        disk = self._disk_of(command, arguments)
        disks = self._disks()
        chain = Chain.from_qmp(block_devices(disks), named_nodes(disks), disk)
        job = self.jobs.of(disk)
        notes = self.notes
        call = translate(
            command, arguments, chain, self.name, disk, notes.added, notes.checkpoints, str(job.type) if job else ""
        )
        starts = command in JOB_TYPES or command == "transaction"
        if starts:  # announced before the call: a job can be READY before libvirt's call returns
            self.jobs.expect(disk, command, arguments)
        if call.method:
            flags = 0
            for flag in call.flags:
                flags |= getattr(self.libvirt, flag)
            try:
                getattr(self.domain, call.method)(*call.args, flags)
            except Exception as exc:
                if starts:
                    self.jobs.failed_to_start(disk, str(exc))
                raise
        notes.remember(command, arguments, call)
        return {}

    def _disk_of(self, command: str, arguments: dict) -> str:
        """The disk target a command is about: named by a layer, the disk, or (for verbs) a job id."""
        job_id = arguments.get("device") if command.startswith("block-job-") else arguments.get("id")
        running = self.jobs.disk_of(job_id)
        if running is not None:
            return running
        disks = self._disks(sizes=False)
        if command == "transaction":
            data = [action.get("data", {}) for action in arguments.get("actions") or []]
            name = next((d.get("device") or d.get("node") for d in data if d.get("device") or d.get("node")), None)
        else:
            keys = ("device", "node-name", "node", "top-node", "top")
            name = next((arguments[key] for key in keys if arguments.get(key)), None)
        found = find_layer(disks, name) if name else None
        if found is not None:
            return found[0].target
        if name is None and len(disks) == 1:
            return disks[0].target
        known = ", ".join(sorted({d.target for d in disks} | {layer.name for d in disks for layer in d.layers}))
        raise InputError(
            f"{command}: '{name}' is neither a disk nor a layer of {self.where}"
            if name
            else f"{command} names no disk",
            f"its disks and layers are {known or 'none'}",
            "name a layer as virsh does (vda[2]), by its file, or the disk (vda)",
        )

    # -- what libvirt knows -----------------------------------------------------------------
    def _disks(self, sizes: bool = True) -> list[Disk]:
        disks = parse_disks(self.domain.XMLDesc(0))
        if not sizes:
            return disks
        libvirt = self.libvirt
        stats = self.conn.domainListGetStats(
            [self.domain], libvirt.VIR_DOMAIN_STATS_BLOCK, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_BACKING
        )
        by_file = sizes_from_stats(stats[0][1]) if stats else {}
        return [Disk(d.target, d.alias, d.layers, d.read_only, d.mirror, by_file) for d in disks]

    def _bitmaps(self) -> dict[str, list[dict]]:
        """libvirt's checkpoints as the dirty bitmaps QEMU keeps for them (libvirt names each after its checkpoint)."""
        names = [checkpoint.getName() for checkpoint in self.domain.listAllCheckpoints(0)]
        bitmaps = [{"name": name, "recording": True, "persistent": True, "granularity": 0} for name in names]
        return {disk.target: bitmaps for disk in self._disks(sizes=False)} if bitmaps else {}

    def _status(self) -> dict:
        libvirt = self.libvirt
        state, _ = self.domain.state()
        words = {
            libvirt.VIR_DOMAIN_RUNNING: "running",
            libvirt.VIR_DOMAIN_PAUSED: "paused",
            libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
            libvirt.VIR_DOMAIN_SHUTOFF: "shutdown",
            libvirt.VIR_DOMAIN_CRASHED: "guest-panicked",
        }
        return {"running": state == libvirt.VIR_DOMAIN_RUNNING, "status": words.get(state, "paused")}


def _job_entry(entry: dict) -> dict:
    """A ``query-block-jobs`` entry as ``query-jobs`` shows it."""
    return {
        "id": entry["device"],
        "type": entry["type"],
        "status": entry["status"],
        "current-progress": entry["offset"],
        "total-progress": entry["len"],
    }


def _no_monitor(command: str) -> InputError:
    """The sentence for HMP (``vm.hmp``, and ``vm.write``'s qemu-io), which only QEMU's monitor understands."""
    return InputError(
        f"'{command}' (HMP, qemu-io included) goes to QEMU's monitor",
        "a libvirt-native connection sends nothing there, so that libvirt's record of the domain stays true",
        "write from the guest OS (vm.guest: the tiny Linux's writer), or connect with "
        "qb.connect_libvirt(..., passthrough=True), which taints the domain",
    )


def _absolute(command: str, arguments: dict) -> None:
    """libvirt takes only absolute file names (QEMU under libvirt runs in /): refuse a relative one before sending."""
    key = "target" if command in ("drive-mirror", "drive-backup") else "snapshot-file"
    name = arguments.get(key)
    if isinstance(name, str) and not name.startswith("/"):
        raise InputError(
            f"{command}: {key}='{name}' is a relative file name",
            "libvirt takes absolute paths only, and QEMU under libvirt runs in /",
            f"pass the full path, e.g. {key}=str(Path('{name}').resolve()) or a path beside the disk's images",
        )
