"""Persistent libvirt domains for tests: define, start, restart, inspect, and leave nothing behind.

A test that needs libvirt's own picture of a disk (what it boots after ``virsh destroy`` + ``start``) needs a
persistent domain. The ``domains`` fixture defines and starts them on ``qemu:///system`` (``qblocknb-test-<hex>``,
so a stale one is recognisable) and at the end destroys and undefines each, with its checkpoint and snapshot
metadata, whatever the test did. A test module takes the fixtures with
``conn, domains = libvirt_env.conn, libvirt_env.domains``.
Without libvirt-python or a reachable daemon the tests are skipped, except under CI (``CI`` set), where they fail;
``tools/libvirt-setup.sh`` sets both up.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qblocknb.live import guestimage, images
from qblocknb.live.guest import Guest
from qblocknb.live.images import Run
from qblocknb.live.libvirtguest import GuestPaths, attach_guest, domain_gone, domain_xml, guest_paths
from qblocknb.qmp.libvirt import start_event_loop

URI = "qemu:///system"
PREFIX = "qblocknb-test-"

try:
    import libvirt
except ImportError:
    libvirt = None


def unavailable(reason: str) -> None:
    """Skip on a developer's machine; under CI the set-up script should have made libvirt available."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}, and CI is set: run tools/libvirt-setup.sh before the tests", pytrace=False)
    pytest.skip(f"{reason}; run tools/libvirt-setup.sh as root to get it")


@functools.cache
def connection() -> libvirt.virConnect:
    """One connection for the whole run, opened after qblocknb's event loop (or libvirt calls stall)."""
    start_event_loop()
    return libvirt.open(URI)


@pytest.fixture(scope="session")
def conn() -> libvirt.virConnect:
    if libvirt is None:
        unavailable("libvirt-python cannot be imported (pip install libvirt-python)")
    try:
        return connection()
    except libvirt.libvirtError as exc:
        unavailable(f"libvirtd is not reachable at {URI} ({exc.get_error_message()})")


@dataclass(frozen=True)
class Domain:
    """A test domain; ``guest_paths`` is set when it boots the test guest, ``started`` is ``time.monotonic()``."""

    name: str
    image: Path
    started: float
    guest_paths: GuestPaths | None = None


class Domains:
    """Defines and starts persistent domains; ``remove_all`` destroys and undefines every one of them."""

    def __init__(self, conn: libvirt.virConnect, sockets_dir: Path) -> None:
        self.conn = conn
        self.sockets_dir = sockets_dir
        self.names: list[str] = []

    def start(self, image: Path, *, guest: bool = False, paused: bool | None = None) -> Domain:
        """Define a domain on ``image`` and start it: paused unless it boots the guest (which must run)."""
        paused = not guest if paused is None else paused
        if guest and paused:
            raise ValueError("a guest domain must run: its guest boots while the test waits")
        name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
        boot = guestimage.boot_files() if guest else None
        xml = domain_xml(name, image, guest=boot, sockets_dir=self.sockets_dir if guest else None)
        dom = self.conn.defineXML(xml)
        self.names.append(name)  # before it starts: a failed start still leaves a definition to remove
        started = time.monotonic()
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED if paused else 0)
        return Domain(name, image, started, guest_paths(self.sockets_dir, name) if guest else None)

    def remove_all(self) -> None:
        """Destroy and undefine every domain started here; raise afterwards if one would not go."""
        failures = []
        for name in self.names:
            try:
                remove(self.conn, name)
            except libvirt.libvirtError as exc:
                failures.append(f"{name}: {exc.get_error_message()}")
        self.names.clear()
        assert not failures, f"test domains left behind: {'; '.join(failures)}"


def remove(conn: libvirt.virConnect, name: str) -> None:
    """Destroy (if running) and undefine a domain with its checkpoint and snapshot metadata."""
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return  # already gone
    if dom.isActive():
        with contextlib.suppress(libvirt.libvirtError):  # it may have stopped meanwhile
            dom.destroy()
    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)


@contextlib.contextmanager
def temporary_domains(conn: libvirt.virConnect) -> Iterator[Domains]:
    """Domains destroyed and undefined on leaving, however it is left."""
    sockets_dir = Path(tempfile.mkdtemp(prefix="qbn-"))  # short: AF_UNIX paths hold 108 bytes
    started = Domains(conn, sockets_dir)
    try:
        yield started
    finally:
        try:
            started.remove_all()
        finally:
            shutil.rmtree(sockets_dir, ignore_errors=True)


@pytest.fixture
def domains(conn: libvirt.virConnect) -> Iterator[Domains]:
    """Start persistent test domains; each is destroyed and undefined at the end, even after a failure."""
    with temporary_domains(conn) as started:
        yield started


# -- the guest -------------------------------------------------------------------------------------------------
def boot_guest(domain: Domain, started: float | None = None) -> Guest:
    """The running domain's test guest once its shell answers; after a ``restart`` pass the time it returned."""
    assert domain.guest_paths is not None, f"{domain.name} was not started with guest=True"
    gone = domain_gone(domain.name, lambda: running(domain.name))
    return attach_guest(domain.guest_paths, gone, domain.started if started is None else started)


def running(name: str) -> bool:
    return connection().lookupByName(name).state()[0] == libvirt.VIR_DOMAIN_RUNNING


def restart(name: str, timeout: float = 30.0) -> float:
    """``virsh destroy`` + ``start``: libvirt boots what its XML names now; returns the monotonic start time."""
    dom = connection().lookupByName(name)
    dom.destroy()
    started = time.monotonic()
    dom.create()
    deadline = started + timeout
    while not running(name):
        assert time.monotonic() < deadline, f"{name} did not run within {timeout:g} s of its start"
        time.sleep(0.05)
    return started


# -- libvirt's picture of the disks ----------------------------------------------------------------------------
def virsh(*args: str) -> str:
    done = subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"virsh {' '.join(args)} failed: {done.stderr.strip()}"
    return done.stdout


def domblklist(name: str) -> list[str]:
    """The file of each disk, as ``virsh domblklist --details`` lists them."""
    rows = [line.split(None, 3) for line in virsh("domblklist", "--details", name).splitlines()[2:]]
    return [row[3] for row in rows if len(row) == 4 and row[1] == "disk"]


def xml_chain(name: str, disk: str = "vda", inactive: bool = False) -> list[str]:
    """The files of ``disk``'s chain, top first, following ``<backingStore>`` in ``virsh dumpxml``."""
    root = ET.fromstring(virsh("dumpxml", *(["--inactive"] if inactive else []), name))
    element = root.find(f"devices/disk/target[@dev='{disk}']/..")
    assert element is not None, f"{name} has no disk {disk}"
    files = []
    while element is not None and (source := element.find("source")) is not None:
        files.append(source.get("file") or source.get("dev") or source.get("name", ""))
        element = element.find("backingStore")
    return files


def tainted(name: str) -> bool:
    """True when ``virsh dominfo`` carries a "tainted" message (e.g. after a monitor passthrough command)."""
    return "tainted:" in virsh("dominfo", name).partition("Messages:")[2]


def read_back(image: Path, runs: list[Run]) -> list[Run]:
    """The ``(offset, length, pattern)`` runs that do not read back through the image's chain; ``[]`` when all do.

    ``qemu-io -U -r`` reads beside a running QEMU; flush or stop the domain first for its latest writes.
    """
    if images.runs_match(image, runs):
        return []
    return [run for run in runs if not images.runs_match(image, [run])]
