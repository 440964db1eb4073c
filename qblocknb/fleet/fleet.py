"""``qb.Fleet(uris)``: every disk of every domain on several libvirt hosts, read at once, one connection each.

    fleet = qb.Fleet(["qemu:///system", "qemu+ssh://root@host2/system"])
    fleet.disks                          # one row per disk: host, domain, state, chain, depth, sizes, job...
    fleet.jobs                           # every block job on every host
    vm = fleet[("host2", "vm7")]         # that domain's Machine, libvirt-native
    fleet.plan(qb.goals.max_depth(3)).run(per_host=2, bandwidth="50M")

Hosts are read concurrently, each by a thread of its own over its one connection (opened on first use,
opened again once it died); a host that cannot be read within ``timeout`` or at all is a row with its
error.  ``listen`` hands libvirt's block-job and lifecycle events of every host to a callback, so views
redraw on events instead of polling every domain.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pandas as pd

from qblocknb.errors import InputError
from qblocknb.fleet.frames import disk_rows, disks_frame, jobs_frame
from qblocknb.fleet.reads import DomainState, HostRead, read_host
from qblocknb.live.attach import connect_libvirt
from qblocknb.model.chain import Chain
from qblocknb.model.listeners import Listeners
from qblocknb.qmp.libvirt import _libvirt_modules, start_event_loop

if TYPE_CHECKING:
    from qblocknb.fleet.plan import FleetPlan, Select
    from qblocknb.live.machine import Machine
    from qblocknb.model.goals import Rule

READ_TIMEOUT = 30.0
EventCallback = Callable[[str, str, str], None]  # (host, domain, "block job" | "lifecycle")


def host_labels(uris: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    """Each URI under a label: the mapping's keys, else the URI's host (``localhost`` for a local URI).

    >>> host_labels(["qemu:///system", "qemu+ssh://root@host2/system", "qemu+ssh://host2:2222/system"])
    {'localhost': 'qemu:///system', 'host2': 'qemu+ssh://root@host2/system', 'host2#2': 'qemu+ssh://host2:2222/system'}
    """
    if isinstance(uris, Mapping):
        return dict(uris)
    labels: dict[str, str] = {}
    for uri in uris:
        base = label = urlsplit(uri).hostname or "localhost"
        number = 1
        while label in labels:
            number += 1
            label = f"{base}#{number}"
        labels[label] = uri
    return labels


class Fleet:
    """A set of libvirt hosts, each behind one connection."""

    def __init__(self, uris: Sequence[str] | Mapping[str, str], timeout: float = READ_TIMEOUT) -> None:
        self.hosts = host_labels(uris)
        if not self.hosts:
            raise InputError("a fleet of no hosts", "no URI was given", "pass URIs, such as ['qemu:///system']")
        self.timeout = timeout
        self.libvirt, _ = _libvirt_modules("qb.Fleet")
        start_event_loop()  # before the first connection, or libvirt's calls can stall
        self._conns: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._machines: dict[tuple[str, str], Machine] = {}
        self.listeners = Listeners()  # called with (host, domain, what) on libvirt's event thread
        self._registered: dict[str, tuple[Any, list[int]]] = {}

    def __repr__(self) -> str:
        return f"<Fleet {', '.join(f'{label}={uri}' for label, uri in self.hosts.items())}>"

    # -- connections ------------------------------------------------------------------------
    def connection(self, host: str) -> Any:
        """The host's connection, opened now if it never was or died; its event callbacks follow it."""
        uri = self._uri(host)
        with self._lock:
            conn = self._conns.get(host)
            if conn is not None and conn.isAlive():
                return conn
        opened = self.libvirt.open(uri)
        with self._lock:
            self._conns[host] = opened
        if len(self.listeners):
            self._register(host, opened)
        return opened

    def _uri(self, host: str) -> str:
        if host not in self.hosts:
            raise InputError(
                f"the fleet has no host {host!r}", f"its hosts are {', '.join(self.hosts)}", "name one of those"
            )
        return self.hosts[host]

    # -- reads ------------------------------------------------------------------------------
    def read(self, hosts: Sequence[str] | None = None) -> list[HostRead]:
        """Every host (or those named) read at once, each on a thread of its own; in the fleet's order."""
        names = list(hosts or self.hosts)
        results: dict[str, HostRead] = {}
        threads = [
            threading.Thread(target=lambda h=h: results.__setitem__(h, self._read_one(h)), daemon=True) for h in names
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self.timeout)
        late = f"did not answer within {self.timeout:g} s"
        return [results.get(h) or HostRead(h, self.hosts[h], error=f"{self.hosts[h]} {late}") for h in names]

    def _read_one(self, host: str, only: str | None = None) -> HostRead:
        uri = self._uri(host)
        try:
            conn = self.connection(host)
        except self.libvirt.libvirtError as exc:
            return HostRead(host, uri, error=f"{uri} could not be reached: {exc.get_error_message()}")
        return read_host(host, uri, conn, self.libvirt, only)

    @property
    def disks(self) -> pd.DataFrame:
        """One row per disk of every domain on every host, read now; an unreachable host is a row with its error."""
        return disks_frame(self.read())

    @property
    def jobs(self) -> pd.DataFrame:
        """Every block job on every host, read now."""
        return jobs_frame(self.read())

    def rows(self, host: str | None = None, name: str | None = None) -> list[dict]:
        """``fleet.disks`` as dicts: of every host, one ``host``, or its domain ``name`` (none once it is gone)."""
        return disk_rows(self.read() if host is None else [self._read_one(host, name)])

    def job_info(self, host: str, name: str, disk: str) -> dict:
        """``blockJobInfo`` of one disk (``{}`` when none runs): ``type``, ``cur``, ``end``, ``bandwidth`` (bytes/s)."""
        dom = self.connection(host).lookupByName(name)
        return dom.blockJobInfo(disk, self.libvirt.VIR_DOMAIN_BLOCK_JOB_INFO_BANDWIDTH_BYTES) or {}

    def domain(self, host: str, name: str) -> DomainState:
        """One domain, read now; InputError when the host cannot be read or has no such domain."""
        read = self._read_one(host, name)
        if read.error or not read.domains:
            raise InputError(
                f"domain {name!r} on {host} cannot be read", read.error or "it is not there", "check fleet.disks"
            )
        return read.domains[0]

    def chain(self, host: str, name: str, disk: str = "vda") -> Chain:
        """The chain of ``disk`` of domain ``name`` on ``host``, from its XML, without a Machine."""
        try:
            return self.domain(host, name).chain(disk)
        except KeyError as exc:
            raise InputError(str(exc.args[0]), "libvirt lists no such disk", "pick one of those") from None

    def __getitem__(self, key: tuple[str, str]) -> Machine:
        """``fleet[(host, domain)]``: that running domain as a libvirt-native Machine (kept for the next ask)."""
        host, name = key
        machine = self._machines.get(key)
        if machine is None or not machine.session.connected:
            machine = self._machines[key] = connect_libvirt(name, self._uri(host))
        return machine

    # -- plans ------------------------------------------------------------------------------
    def plan(self, rule: Rule, select: Select = None, prefer: str | Sequence[str] = ()) -> FleetPlan:
        """A plan per selected disk to the goal ``rule`` gives its chain (made on the chain, no Machine needed)."""
        from qblocknb.fleet.plan import plan_fleet

        return plan_fleet(self, rule, select, prefer)

    # -- events -----------------------------------------------------------------------------
    def listen(self, callback: EventCallback) -> Any:
        """Call ``callback(host, domain, what)`` on libvirt's event thread for each block-job or lifecycle event.

        Returns a handle whose ``remove()`` stops it.  The callback must not call libvirt itself (it runs on the
        thread that delivers libvirt's replies): let it wake a thread of its own.
        """
        handle = self.listeners.register(callback)
        for host in self.hosts:
            try:
                conn = self.connection(host)
            except self.libvirt.libvirtError:
                continue  # an unreachable host: registered when a read opens its connection again
            if self._registered.get(host, (None, []))[0] is not conn:
                self._register(host, conn)
        return handle

    def _register(self, host: str, conn: Any) -> None:
        libvirt = self.libvirt
        ids = [
            conn.domainEventRegisterAny(
                None,
                libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2,
                lambda c, dom, *rest: self.listeners.notify(host, dom.name(), "block job"),
                None,
            ),
            conn.domainEventRegisterAny(
                None,
                libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                lambda c, dom, *rest: self.listeners.notify(host, dom.name(), "lifecycle"),
                None,
            ),
        ]
        self._registered[host] = (conn, ids)

    def close(self) -> None:
        """Close the Machines handed out and every host's connection."""
        for machine in self._machines.values():
            machine.session.close()
        self._machines.clear()
        with self._lock:
            conns, self._conns = self._conns, {}
        for conn, ids in self._registered.values():
            for callback_id in ids:
                with contextlib.suppress(self.libvirt.libvirtError):  # the connection died with its host
                    conn.domainEventDeregisterAny(callback_id)
        self._registered.clear()
        for conn in conns.values():
            with contextlib.suppress(self.libvirt.libvirtError):
                conn.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
