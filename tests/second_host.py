"""The second libvirt host that ``tools/libvirt-second-host.sh`` sets up, for tests: its URI, a connection, cleanup.

That script keeps the URI (``qemu+ssh://qbhost2@127.0.0.2:2222/system?keyfile=...``) in
``/var/lib/qblocknb/host2/uri``; destination images go into its storage pool ``qblocknb-host2`` under
``/var/lib/qblocknb/host2/images``.  A test module takes the fixtures with
``conn, domains, host2 = libvirt_env.conn, libvirt_env.domains, second_host.host2``.
Without the second host the tests are skipped, except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest
from libvirt_env import libvirt, remove, unavailable

HOME = Path("/var/lib/qblocknb/host2")
IMAGES = HOME / "images"
POOL = "qblocknb-host2"
SETUP = "tools/libvirt-second-host.sh"


def uri() -> str:
    """The second host's URI, as the set-up script left it; unavailable (skip, or fail under CI) without it."""
    try:
        return (HOME / "uri").read_text().strip()
    except OSError as exc:
        unavailable(f"the second libvirt host is not set up ({exc.strerror}: {HOME / 'uri'}); run {SETUP} as root")


_open: dict[str, libvirt.virConnect] = {}


def connection(address: str) -> libvirt.virConnect:
    """One connection for the run, opened again if it died (tests/test_fleet.py stops host2's daemon on purpose);
    the ``conn`` fixture has started qblocknb's event loop before it."""
    known = _open.get(address)
    if known is None or not known.isAlive():
        _open[address] = libvirt.open(address)
    return _open[address]


@pytest.fixture
def host2(conn: libvirt.virConnect) -> libvirt.virConnect:
    """A connection to the second host over ssh (``conn`` first: it registers libvirt's event loop)."""
    address = uri()
    try:
        return connection(address)
    except libvirt.libvirtError as exc:
        unavailable(f"the second libvirt host does not answer at {address} ({exc.get_error_message()}); run {SETUP}")


def virsh2(*args: str) -> str:
    done = subprocess.run(["virsh", "-c", uri(), *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"virsh -c {uri()} {' '.join(args)} failed: {done.stderr.strip()}"
    return done.stdout


def remove_image(dconn: libvirt.virConnect, path: Path) -> None:
    """Delete a destination image through the pool that holds it, so libvirt forgets the volume too."""
    pool = dconn.storagePoolLookupByName(POOL)
    pool.refresh()
    with contextlib.suppress(libvirt.libvirtError):  # never created (the migration failed before)
        pool.storageVolLookupByName(path.name).delete()


def leftovers(dconn: libvirt.virConnect, conn: libvirt.virConnect, name: str, path: Path) -> list[str]:
    """What a migration of ``name`` left on either daemon: domains of that name, and the destination volume."""
    found = [f"{where}: domain {name}" for where, c in (("source", conn), ("destination", dconn)) if _has(c, name)]
    pool = dconn.storagePoolLookupByName(POOL)
    pool.refresh()
    if path.name in pool.listVolumes():
        found.append(f"destination: volume {path.name}")
    return found


def _has(c: libvirt.virConnect, name: str) -> bool:
    return name in [dom.name() for dom in c.listAllDomains()]


def clean(dconn: libvirt.virConnect, name: str, path: Path) -> None:
    """Destroy and undefine the migrated domain on the second host, and delete its image there."""
    remove(dconn, name)
    remove_image(dconn, path)
