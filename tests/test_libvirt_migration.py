"""Live storage migration through libvirt's own API: a persistent domain moves with its disk to the second host.

The chain is written offline with known patterns; after ``migrate_domain`` the domain runs on the second
host (``tools/libvirt-second-host.sh``) on one flat copy in that host's pool, the source daemon has forgotten it,
neither side is tainted, and the copy reads back every pattern.  The tiny Linux writes records through a
migration too.  Each test removes the domain and its image from both daemons, whatever happened.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import astuple
from hashlib import md5
from pathlib import Path

import libvirt_env
import pytest
import second_host
from libvirt_env import URI, boot_guest, libvirt, read_back, tainted
from second_host import IMAGES, clean, leftovers, uri, virsh2
from test_libvirt_env import WRITER, records_in

import qblocknb as qb
from qblocknb.errors import InputError
from qblocknb.live.guest import STOP_FILE, Guest, expected_record
from qblocknb.live.images import Run
from qblocknb.live.libvirtguest import domain_gone, guest_paths
from qblocknb.migration.libvirtmigration import migrate_domain
from qblocknb.model.sizes import parse_size

conn, domains, host2 = libvirt_env.conn, libvirt_env.domains, second_host.host2  # the fixtures, for pytest

MiB = 1 << 20
# (offset, length, pattern): A in the base, B in the top over part of A, and what B left of A.
RUNS: list[Run] = [(0, MiB, 0xA1), (2 * MiB, MiB, 0xB2), (3 * MiB, MiB, 0xA1), (8 * MiB, MiB, 0)]


@pytest.fixture
def chain(lab: qb.Lab):
    """``[a.qcow2] <-- [b.qcow2]``: A writes 0xA1 over 0-4 MiB, B then 0xB2 over 2-3 MiB."""
    lab.create("a.qcow2", size="32M")
    lab.write("a.qcow2", 0, 4 * MiB, pattern=0xA1)
    lab.create("b.qcow2", backing=lab.file("a.qcow2"))
    lab.write("b.qcow2", 2 * MiB, MiB, pattern=0xB2)
    return lab.file("b.qcow2")


def test_a_persistent_domain_moves_with_its_storage_to_the_second_host(chain, domains, conn, host2):
    domain = domains.start(chain, paused=False)
    vm = qb.connect_libvirt(domain.name, URI)
    assert str(vm.chain()) == "[a.qcow2] <-- [b.qcow2]"
    target = IMAGES / f"{domain.name}-vda.qcow2"
    try:
        started = time.monotonic()
        m = migrate_domain(vm, uri(), {"vda": target}, bandwidth=32)
        print(f"migrated in {time.monotonic() - started:.1f} s\n{m.virsh}\n{m.steps}")
        dest = m.destination.session.domain
        assert dest.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert dest.isPersistent(), "PERSIST_DEST defines it on the second host"
        rows = virsh2("domblklist", "--details", domain.name).splitlines()[2:]
        assert [row.split()[3] for row in rows if row.strip()] == [str(target)]
        assert str(m.destination.chain()) == f"[{target.name}]", "the copy is one flat image"
        assert "tainted:" not in virsh2("dominfo", domain.name).partition("Messages:")[2]
        assert domain.name not in [d.name() for d in conn.listAllDomains()], "UNDEFINE_SOURCE: gone from the source"

        phases = m.timeline["phase"].tolist()
        assert "storage" in phases and phases[-1] == "completed", phases
        assert m.timeline["disk_total"].max() >= 32 * MiB
        assert m.timeline.iloc[-1]["memory_total"] > 0
        assert m.virsh.startswith("virsh -c qemu:///system migrate --live --p2p --copy-storage-all --persistent")
        assert m.destination_xml is not None and str(target) in m.destination_xml

        m.destination.session.close()
        dest.destroy()  # QEMU caches qcow2 metadata while it runs: read the copy once it is down
        assert read_back(target, RUNS) == []
    finally:
        clean(host2, domain.name, target)
    assert leftovers(host2, conn, domain.name, target) == []


def test_a_disk_the_domain_lacks_is_refused_before_anything_moves(chain, domains, conn, host2):
    domain = domains.start(chain)
    vm = qb.connect_libvirt(domain.name, URI)
    try:
        with pytest.raises(InputError, match=r"targets names vdb.*its disks are vda"):
            migrate_domain(vm, uri(), {"vdb": IMAGES / "nowhere.qcow2"})
        assert vm.session.domain.isActive() and not tainted(domain.name)
        assert str(vm.chain()) == "[a.qcow2] <-- [b.qcow2]"
    finally:
        vm.session.close()


def test_a_machine_reached_over_qmp_is_pointed_to_migrate_storage(lab: qb.Lab):
    lab.create("a.qcow2", size="16M")
    vm = lab.launch("a.qcow2")
    with pytest.raises(InputError, match=r"qb\.migrate_storage\(src, dst\)"):
        migrate_domain(vm, "qemu+ssh://elsewhere/system")


def test_the_guest_writes_through_the_migration_and_its_records_read_back_on_the_second_host(
    lab: qb.Lab, domains, conn, host2, tmp_path
):
    lab.create("a.qcow2", size="64M")
    domain = domains.start(lab.file("a.qcow2"), guest=True)
    guest = boot_guest(domain)
    guest.start_writer(**WRITER)
    time.sleep(1)
    vm = qb.connect_libvirt(domain.name, URI)
    sockets = Path(tempfile.mkdtemp(prefix="qbn-"))  # the destination's serial ports: the source's are still bound
    paths = guest_paths(sockets, domain.name)
    xml = vm.session.domain.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
    assert domain.guest_paths is not None
    for old, new in zip(astuple(domain.guest_paths), astuple(paths), strict=True):
        xml = xml.replace(str(old), str(new))
    target = IMAGES / f"{domain.name}-vda.qcow2"
    try:
        m = migrate_domain(vm, uri(), {"vda": target}, destination_xml=xml)
        moved = time.time()
        dest = m.destination.session.domain
        on_source = guest.writer_progress
        written = on_source[(on_source["kind"] == "W") & (on_source["t"] < moved)].groupby("record")["round"].max()
        assert len(written) > 0, "the writer wrote on the source"
        # The same guest, reached through the destination QEMU's serial ports.
        gone = domain_gone(domain.name, dest.isActive)
        there = Guest(gone, *astuple(paths), time.monotonic())
        there.console.connect(gone)
        there.shell(f"touch {STOP_FILE}; sleep 1; sync")  # the writer stops after its record; flush it
        size, offset = parse_size(WRITER["record"]), parse_size(WRITER["offset"])
        sums = records_in(there, parse_size(WRITER["size"]) // size, size, offset)
        last = int(written.max()) + 200  # more rounds than the destination can write before the stop
        for record, newest in written.items():
            allowed = {md5(expected_record(record, r, size)).hexdigest() for r in range(newest, last)}
            assert sums[record] in allowed, f"record {record} holds no round since {newest}"
        print(f"{len(written)} records written on the source, each read back at that round or a later one")
        m.destination.session.close()
        dest.destroy()
    finally:
        clean(host2, domain.name, target)
        shutil.rmtree(sockets, ignore_errors=True)
    assert leftovers(host2, conn, domain.name, target) == []
