"""The persistent-domain test support of ``tests/libvirt_env.py``, and the test guest under libvirt, all real.

A persistent domain starts, libvirt's XML names its chain, it restarts, and it leaves nothing behind even when
the test fails. A guest domain boots the tiny Linux of ``qblocknb.live.guestimage``, its writer runs, and after
``virsh destroy`` + ``start`` a freshly booted guest reads every record back. Boot times are printed
(``pytest -s`` shows them); they are not asserted.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
import xml.etree.ElementTree as ET

import libvirt_env
import pytest
from conftest import qemu_pids_under
from libvirt_env import (
    boot_guest,
    connection,
    domblklist,
    read_back,
    restart,
    running,
    tainted,
    temporary_domains,
    virsh,
    xml_chain,
)

import qblocknb as qb
from qblocknb.live import guestimage
from qblocknb.live.guest import Guest, expected_record

conn, domains = libvirt_env.conn, libvirt_env.domains  # the fixtures, where pytest looks for them

MiB = 1 << 20
WRITER = {"size": "2M", "record": "64k", "offset": "8M", "rate": 20}


def all_domains() -> list[str]:
    return virsh("list", "--all", "--name").split()


def test_a_persistent_domain_names_its_chain_and_restarts(lab: qb.Lab, domains):
    lab.create("a.qcow2", size="64M")
    lab.write("a.qcow2", 0, "1M", pattern=0xA1)
    lab.create("b.qcow2", backing=lab.file("a.qcow2"))
    lab.write("b.qcow2", "1M", "1M", pattern=0xB2)
    a, b = str(lab.file("a.qcow2")), str(lab.file("b.qcow2"))
    domain = domains.start(lab.file("b.qcow2"))
    dom = connection().lookupByName(domain.name)
    assert dom.isPersistent() and not running(domain.name), "persistent, and paused"
    assert domblklist(domain.name) == [b]
    assert xml_chain(domain.name) == [b, a], "the live XML follows the backing chain libvirt probed"
    assert xml_chain(domain.name, inactive=True) == [b], "the definition names the top only"
    assert not tainted(domain.name)

    restart(domain.name)
    assert running(domain.name)
    assert domblklist(domain.name) == [b] and xml_chain(domain.name) == [b, a]
    runs = [(0, "1M", 0xA1), ("1M", "1M", 0xB2)]
    assert read_back(lab.file("b.qcow2"), runs) == []
    assert read_back(lab.file("b.qcow2"), [*runs, ("2M", "1M", 0xC3)]) == [("2M", "1M", 0xC3)]


def test_domains_are_removed_even_when_the_test_fails(lab: qb.Lab, conn):
    lab.create("a.qcow2", size="64M")
    lab.create("b.qcow2", size="64M")
    with pytest.raises(RuntimeError, match="the test failed"), temporary_domains(conn) as domains:
        paused = domains.start(lab.file("a.qcow2")).name
        ran = domains.start(lab.file("b.qcow2"), paused=False).name
        raise RuntimeError("the test failed")
    left = all_domains()
    assert paused not in left and ran not in left
    assert qemu_pids_under(lab.path) == []


def records_in(guest: Guest, count: int, record: int, offset: int) -> list[str]:
    """The md5 of each record on the guest's /dev/vda, read past its page cache."""
    return guest.shell(
        f"echo 3 > /proc/sys/vm/drop_caches; i=0; while [ $i -lt {count} ]; do "
        f"dd if=/dev/vda bs={record} count=1 skip=$(({offset} + i * {record})) iflag=skip_bytes,fullblock "
        "2>/dev/null | md5sum; i=$((i + 1)); done",
        timeout=60,
    ).split()[::2]


def test_the_guest_boots_under_libvirt_and_its_records_survive_a_restart(lab: qb.Lab, domains):
    lab.create("a.qcow2", size="64M")
    domain = domains.start(lab.file("a.qcow2"), guest=True)
    virt_type = ET.fromstring(virsh("dumpxml", domain.name)).get("type")
    guest = boot_guest(domain)
    print(f"\nguest booted under libvirt in {guest.boot_seconds:.1f} s (domain type {virt_type})")
    assert guest.shell("uname -r") == guestimage.find_kernel()[0]
    assert "vda" in guest.shell("cat /proc/partitions").split()

    guest.start_writer(**WRITER)
    time.sleep(3)
    report = guest.stop_writer()
    assert report.ok, str(report)
    assert report.records_written > 0
    rounds = guest.point_in_time(time.time(), slack=0)
    written = {record: max(r) for record, r in rounds.items() if r != {None}}
    assert written, "the writer finished at least one record"

    booted = boot_guest(domain, restart(domain.name))
    print(f"guest booted again in {booted.boot_seconds:.1f} s")
    assert booted.console_log.read_text(errors="replace").count("__qbn_READY") == 1, "a fresh console log"
    sums = records_in(booted, len(rounds), 64 << 10, 8 * MiB)
    lost = [
        r for r, round_ in written.items() if sums[r] != hashlib.md5(expected_record(r, round_, 64 << 10)).hexdigest()
    ]
    assert lost == [], f"records not as the first boot left them: {lost}"

    raw = lab.file("a.raw")
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(lab.file("a.qcow2")), str(raw)], check=True)
    assert guest.check_copy(raw, time.time()) == [], "the host reads the same records from the image"
