"""What one libvirt host says about its domains, read over one connection in a handful of calls.

``read_host`` asks ``getAllDomainStats`` once for every domain's state and each image's sizes (with the
backing chain), then per domain its XML (``parse_disks``), its checkpoints, and for a running one
``blockJobInfo`` of each disk.  A shut-off domain's XML names only its active image: the layers below it
come from the storage pools, where they are volumes (libvirt reads each volume's backing file), and are
otherwise unknown (``DomainState.source`` says which).  A host that cannot be read is a ``HostRead`` with
its ``error`` sentence, never an exception.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from typing import Any

from qblocknb.model.chain import Chain
from qblocknb.model.domainxml import Disk, Layer, block_devices, named_nodes, parse_disks, sizes_from_stats

JOB_KINDS = {1: "pull", 2: "copy", 3: "commit", 4: "active-commit", 5: "backup"}  # virDomainBlockJobType
STATES = {0: "no state", 1: "running", 2: "blocked", 3: "paused", 4: "shutting down", 5: "shut off", 6: "crashed"}
LIVE, INACTIVE, POOLS = "live XML", "inactive XML", "inactive XML + pool volumes"
MAX_BACKING = 64  # a backing walk through pool volumes stops here (a loop of volumes would never end)


@dataclass(frozen=True)
class DomainState:
    """One domain as its host described it: state, disks (with sizes), block jobs, checkpoints."""

    host: str
    name: str
    state: str
    disks: tuple[Disk, ...]
    jobs: dict[str, dict] = field(default_factory=dict)  # disk target -> blockJobInfo ({type, bandwidth, cur, end})
    checkpoints: tuple[str, ...] = ()
    source: str = LIVE

    @property
    def active(self) -> bool:
        return self.source == LIVE

    def chain(self, target: str) -> Chain:
        """The chain of disk ``target``, layers named as virsh names them (``vda[2]``), sizes from the stats."""
        disk = next((d for d in self.disks if d.target == target), None)
        if disk is None:
            known = ", ".join(d.target for d in self.disks) or "none"
            raise KeyError(f"{self.name} on {self.host} has no disk {target!r}; its disks are {known}")
        return Chain.from_qmp(block_devices([disk]), named_nodes([disk]), target)


@dataclass(frozen=True)
class HostRead:
    """One host's domains, or the sentence saying why it could not be read."""

    host: str
    uri: str
    domains: tuple[DomainState, ...] = ()
    error: str = ""
    seconds: float = 0.0


def read_host(host: str, uri: str, conn: Any, libvirt: Any, only: str | None = None) -> HostRead:
    """Every domain of the host behind ``conn`` (or the one named ``only``); errors become ``HostRead.error``."""
    started = time.monotonic()
    try:
        flags = libvirt.VIR_DOMAIN_STATS_BLOCK | libvirt.VIR_DOMAIN_STATS_STATE
        if only is None:
            stats = conn.getAllDomainStats(flags, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_BACKING)
        else:
            try:
                found = conn.lookupByName(only)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
                return HostRead(host, uri, seconds=time.monotonic() - started)  # it went away: no rows
            stats = conn.domainListGetStats([found], flags, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_BACKING)
        domains = []
        for dom, values in stats:
            state = _domain(host, conn, libvirt, dom, values)
            if state is not None:
                domains.append(state)
    except libvirt.libvirtError as exc:
        return HostRead(host, uri, error=_sentence(uri, exc), seconds=time.monotonic() - started)
    domains.sort(key=lambda d: d.name)
    return HostRead(host, uri, tuple(domains), seconds=time.monotonic() - started)


def _domain(host: str, conn: Any, libvirt: Any, dom: Any, values: dict) -> DomainState | None:
    """One domain, or None when it went away while being read."""
    try:
        disks = parse_disks(dom.XMLDesc(0))
        running = values.get("state.state") not in (None, libvirt.VIR_DOMAIN_SHUTOFF)
        jobs = {}
        if running:
            in_bytes = libvirt.VIR_DOMAIN_BLOCK_JOB_INFO_BANDWIDTH_BYTES
            jobs = {disk.target: info for disk in disks if (info := dom.blockJobInfo(disk.target, in_bytes))}
        checkpoints = tuple(sorted(checkpoint.getName() for checkpoint in dom.listAllCheckpoints(0)))
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise
    sizes = sizes_from_stats(values)
    source = LIVE
    if not running:
        disks, source = _with_pool_backing(conn, libvirt, disks, sizes)
    disks = [replace(disk, sizes=sizes) for disk in disks]
    state = STATES.get(values.get("state.state", 0), "unknown")
    return DomainState(host, dom.name(), state, tuple(disks), jobs, checkpoints, source)


def _with_pool_backing(conn: Any, libvirt: Any, disks: list[Disk], sizes: dict) -> tuple[list[Disk], str]:
    """A shut-off domain's disks with the layers its storage pools know below each active image."""
    found, extended = [], False
    for disk in disks:
        layers = list(disk.layers)
        while len(layers) < MAX_BACKING:
            below = _pool_backing(conn, libvirt, layers[-1].file, sizes)
            if below is None:
                break
            layers.append(Layer(disk.target, None, *below))
            extended = True
        found.append(replace(disk, layers=tuple(layers)))
    return found, POOLS if extended else INACTIVE


def _pool_backing(conn: Any, libvirt: Any, path: str, sizes: dict) -> tuple[str, str] | None:
    """The backing file and format of the pool volume at ``path`` (its sizes go into ``sizes``), or None."""
    try:
        volume = ET.fromstring(conn.storageVolLookupByPath(path).XMLDesc(0))
    except libvirt.libvirtError:
        return None  # not a volume of any pool: nothing more is known below it
    sizes.setdefault(path, (int(volume.findtext("capacity") or 0), int(volume.findtext("physical") or 0)))
    below = volume.findtext("backingStore/path")
    if not below:
        return None
    fmt = volume.find("backingStore/format")
    return below, fmt.get("type", "raw") if fmt is not None else "raw"


def _sentence(uri: str, exc: Any) -> str:
    return f"{uri} could not be read: {exc.get_error_message()}"
