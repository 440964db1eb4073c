"""Live storage migration of a libvirt domain to another libvirt daemon, as libvirt does it: one call.

``dom.migrateToURI3(uri, params, LIVE | PEER2PEER | NON_SHARED_DISK | PERSIST_DEST | UNDEFINE_SOURCE)``: the
source daemon connects to the destination daemon itself, the destination creates each disk's image (when its
folder is a storage pool there) and exports it over NBD, the source mirrors the whole chain into it (the copy
is one flat image), moves the memory, and the domain ends up running (or paused, as it was) on the
destination only. libvirt records all of it, so the domain stays untainted on both sides::

    import qblocknb as qb
    vm = qb.connect_libvirt("vm1")
    m = migrate_domain(vm, "qemu+ssh://host2/system", targets={"vda": "/var/lib/libvirt/images/vm1.qcow2"})
    m.timeline        # dom.jobStats() every interval: disk bytes first, then memory bytes
    m.destination     # a Machine on the domain at its new host
    print(m.virsh)    # virsh migrate --live --p2p --copy-storage-all --persistent --undefinesource ...

The destination names each disk's file as the source does unless ``targets`` maps a disk (``vda``) to
another path; libvirt then gets a destination XML (``VIR_MIGRATE_PARAM_DEST_XML``) with those paths.  A QEMU
reached over QMP migrates with ``qb.migrate_storage(src, dst)`` instead, step by step.
"""

from __future__ import annotations

import concurrent.futures
import shlex
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

import pandas as pd

from qblocknb.errors import InputError, Timeout

if TYPE_CHECKING:
    from qblocknb.live.machine import Machine

POLL = 0.2  # seconds between two looks at dom.jobStats()
TIMEOUT = 600.0
STEP_COLUMNS = ["step", "call", "started", "duration_s", "outcome"]


@dataclass
class DomainMigration:
    """What ``migrate_domain`` did: its calls (``steps``), the job's progress (``timeline``), and the result."""

    name: str
    uri: str
    flags: list[str]
    params: dict[str, Any]
    virsh: str
    steps: pd.DataFrame
    timeline: pd.DataFrame
    destination: Machine

    @property
    def destination_xml(self) -> str | None:
        """The domain's XML given to the destination (``virsh migrate --xml``), when ``targets`` changed paths."""
        return self.params.get("destination_xml")


def retarget(xml: str, targets: Mapping[str, str | PurePath]) -> str:
    """The domain XML with each disk in ``targets`` on its new file, as one flat image (the copy has no backing).

    Dynamic security labels are left out: the destination makes its own, with the security drivers it has.

    >>> xml = ("<domain><name>vm1</name><seclabel type='dynamic' model='apparmor'/><devices>"
    ...        "<disk type='file' device='disk'><source file='/a/top.qcow2'/>"
    ...        "<backingStore type='file'><source file='/a/base.qcow2'/></backingStore><target dev='vda'/></disk>"
    ...        "</devices></domain>")
    >>> new = ET.fromstring(retarget(xml, {"vda": "/b/vm1.qcow2"}))
    >>> new.find("devices/disk/source").get("file"), new.find(".//backingStore"), new.find("seclabel")
    ('/b/vm1.qcow2', None, None)
    """
    root = ET.fromstring(xml)
    disks = {disk.get("dev"): disk for disk in root.findall("devices/disk/target")}
    unknown = sorted(set(targets) - set(disks))
    if unknown:
        raise InputError(
            f"targets names {', '.join(unknown)}, which the domain does not have",
            f"its disks are {', '.join(sorted(d for d in disks if d)) or 'none'}",
            "name disks by their target (vda), as virsh domblklist lists them",
        )
    for label in root.findall("seclabel[@type='dynamic']"):
        root.remove(label)
    for element in root.findall("devices/disk"):
        target = element.find("target")
        dev = target.get("dev") if target is not None else None
        source = element.find("source")
        if dev not in targets or source is None:
            continue
        source.attrib = {"file": str(targets[dev])}
        element.set("type", "file")
        for backing in element.findall("backingStore"):
            element.remove(backing)
    return ET.tostring(root, encoding="unicode")


def migrate_domain(
    vm: Machine,
    uri: str,
    targets: Mapping[str, str | PurePath] | None = None,
    bandwidth: int | None = None,
    destination_xml: str | None = None,
    timeout: float = TIMEOUT,
) -> DomainMigration:
    """Live-migrate ``vm``'s domain with its storage to the libvirt daemon at ``uri``, in one libvirt call.

    ``targets`` maps disks to their files on the destination (default: the source's paths); ``bandwidth`` is in
    MiB/s, libvirt's unit for migrations (it throttles the disk copy too); ``destination_xml`` replaces the
    domain's XML on the destination (``targets`` still applies to it).  The source domain is undefined once the
    destination runs it; ``vm`` is closed, and the result's ``destination`` is the Machine to go on with.
    """
    session = _native_session(vm)
    libvirt, dom, name = session.libvirt, session.domain, session.name
    if bandwidth is not None and bandwidth <= 0:
        raise InputError(
            f"bandwidth={bandwidth} for migrating '{name}'",
            "libvirt takes a migration's bandwidth in whole MiB/s",
            "pass a positive number of MiB/s, or leave it out for no limit",
        )
    params: dict[str, Any] = {}
    if targets or destination_xml:
        params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = retarget(
            destination_xml or dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE), targets or {}
        )
    if bandwidth:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = bandwidth
    flags = ["MIGRATE_LIVE", "MIGRATE_PEER2PEER", "MIGRATE_NON_SHARED_DISK", "MIGRATE_PERSIST_DEST"]
    if dom.isPersistent():
        flags.append("MIGRATE_UNDEFINE_SOURCE")
    line = virsh_line(session.uri, name, uri, flags, bandwidth, bool(params.get("destination_xml")))

    steps: list[dict[str, Any]] = []
    started = time.monotonic()
    rows = _follow(session, uri, params, flags, timeout, started)
    steps.append(_step("migrate", "migrateToURI3", started, started, "completed"))
    session.close()  # the domain left this daemon; its Machine has nothing more to drive

    from qblocknb.live.attach import connect_libvirt  # the Machine layer sits above this module's imports

    connected = time.monotonic()
    destination = connect_libvirt(name, uri)
    steps.append(_step("connect", "connect_libvirt", started, connected, "attached"))
    completed = destination.session.domain.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    rows.append({"t": time.monotonic() - started, "phase": "completed", **completed})
    return DomainMigration(
        name, uri, flags, params, line, pd.DataFrame(steps, columns=STEP_COLUMNS), pd.DataFrame(rows), destination
    )


def _native_session(vm: Machine) -> Any:
    """The libvirt-native session under ``vm`` (it carries QMP's names out through libvirt's API), or a sentence."""
    session = vm.session
    if not getattr(session, "translates", False):
        raise InputError(
            f"{vm!r} is not a libvirt domain driven through libvirt's API",
            "migrate_domain asks libvirt to migrate the domain (migrateToURI3), and only qb.connect_libvirt gives one",
            "use qb.migrate_storage(src, dst) for QEMUs reached over QMP, or attach with qb.connect_libvirt(name)",
        )
    return session


def _follow(
    session: Any, uri: str, params: dict[str, Any], flags: list[str], timeout: float, started: float
) -> list[dict[str, Any]]:
    """Run the migration in a worker thread and sample ``jobStats`` until it returns; abort it after ``timeout``."""
    libvirt, dom, name = session.libvirt, session.domain, session.name
    bits = 0
    for flag in flags:
        bits |= getattr(libvirt, f"VIR_{flag}")
    rows: list[dict[str, Any]] = []
    what = f"live migration of '{name}' with its storage to {uri}"
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="qblocknb-migrate") as worker:
        call = worker.submit(dom.migrateToURI3, uri, params, bits)
        while not call.done():
            if time.monotonic() - started > timeout:
                dom.abortJob()
                concurrent.futures.wait([call])
                raise Timeout(
                    f"{what} did not finish within {timeout:g} s",
                    "it was aborted; the domain goes on running on the source",
                    "pass a larger timeout, or a larger bandwidth",
                )
            try:
                stats = dom.jobStats()
            except libvirt.libvirtError:  # the job ended between two looks
                stats = {}
            if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) != libvirt.VIR_DOMAIN_JOB_NONE:
                phase = "memory" if stats.get("memory_total") else "storage"
                rows.append({"t": time.monotonic() - started, "phase": phase, **stats})
            concurrent.futures.wait([call], POLL)
        try:
            call.result()
        except libvirt.libvirtError as exc:
            raise session.error_for(f"{what} failed", exc) from None
    return rows


def _step(step: str, call: str, origin: float, started: float, outcome: str) -> dict[str, Any]:
    """One call of the migration; ``started`` in seconds since the migration began, as the timeline's ``t``."""
    return {
        "step": step,
        "call": call,
        "started": started - origin,
        "duration_s": time.monotonic() - started,
        "outcome": outcome,
    }


def virsh_line(source: str, name: str, uri: str, flags: list[str], bandwidth: int | None, xml: bool) -> str:
    """The same migration as a virsh command (``--xml`` names a file holding the destination XML).

    >>> virsh_line("qemu:///system", "vm1", "qemu+ssh://h/system", ["MIGRATE_LIVE", "MIGRATE_PEER2PEER",
    ...            "MIGRATE_NON_SHARED_DISK", "MIGRATE_PERSIST_DEST", "MIGRATE_UNDEFINE_SOURCE"], 50, True)
    'virsh -c qemu:///system migrate --live --p2p --copy-storage-all --persistent --undefinesource \
--bandwidth 50 --xml vm1-destination.xml vm1 qemu+ssh://h/system'
    """
    options = {
        "MIGRATE_LIVE": "--live",
        "MIGRATE_PEER2PEER": "--p2p",
        "MIGRATE_NON_SHARED_DISK": "--copy-storage-all",
        "MIGRATE_PERSIST_DEST": "--persistent",
        "MIGRATE_UNDEFINE_SOURCE": "--undefinesource",
    }
    words = ["virsh", "-c", source, "migrate", *(options[flag] for flag in flags)]
    words += ["--bandwidth", str(bandwidth)] * bool(bandwidth) + ["--xml", f"{name}-destination.xml"] * xml
    return shlex.join([*words, name, uri])
