"""The seed's operations on a persistent libvirt domain, through libvirt's own API: libvirt's record stays true.

After each operation ``virsh dumpxml`` and ``domblklist`` equal ``vm.chain()``, the domain is not tainted,
and a restart (``virsh destroy`` + ``start``) boots that chain with the data the guest saw.  The chain is
built offline in the seed's shape (A, then B, C, D each overwriting one MiB) before the domain starts.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt_env
import pytest
from libvirt_env import URI, boot_guest, domblklist, read_back, restart, tainted, virsh, xml_chain
from test_libvirt_env import WRITER, records_in

import qblocknb as qb
from qblocknb.live.guest import expected_record
from qblocknb.teaching.seedchain import LAYERS, expected_view

conn, domains = libvirt_env.conn, libvirt_env.domains  # the fixtures, where pytest looks for them


@pytest.fixture
def domain(domains, lab):
    """A persistent domain on the seed's chain built offline (``[a] <-- [b] <-- [c] <-- [d]``), paused."""
    opened = []

    def make(letters: str = "ABCD") -> tuple[str, qb.Machine]:
        below = None
        for layer in LAYERS:
            if layer.letter not in letters:
                continue
            lab.create(layer.file, size="64M", **({"backing": below} if below else {}))
            lab.write(layer.file, layer.offset, layer.length, pattern=layer.pattern)
            below = layer.file
        name = domains.start(lab.file(below)).name
        opened.append(qb.connect_libvirt(name, URI))
        return name, opened[-1]

    yield make
    for vm in opened:
        vm.session.close()


def reads(path: Path, letters: str) -> bool:
    return read_back(path, expected_view(letters)) == []


def true_to_libvirt(name: str, vm: qb.Machine, lab: qb.Lab, letters: str, *also: tuple[str, str]) -> None:
    """libvirt's XML names vm.chain(), with no taint; the guest sees ``letters``; a restart boots that chain.

    The files are read while the domain is down (QEMU caches qcow2 metadata while it runs): the top as the
    guest saw it, and each ``(file, letters)`` in ``also``.
    """
    files = [image.file for image in reversed(vm.chain().images)]
    assert xml_chain(name) == files
    assert domblklist(name) == [files[0]]
    assert not tainted(name)
    assert vm.verify(expected_view(letters)), "the guest's view, read through libvirt's pull-mode export"
    virsh("destroy", name)
    assert xml_chain(name, inactive=True)[0] == files[0], "the next start boots the current top"
    assert reads(Path(files[0]), letters)
    for file, seen in also:
        assert reads(lab.file(file), seen), f"{file} reads as {seen}"
    virsh("start", name, "--paused")
    assert xml_chain(name) == files, "the restarted domain opened the same chain"


def test_snapshot_and_stream_keep_libvirt_true(domain, lab):
    name, vm = domain("ABCD")
    chain = vm.chain()
    assert str(chain) == "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]"
    assert chain.active.node_name.startswith("vda[")

    vm.blockdev_snapshot_sync(node_name=chain.active.node_name, snapshot_file=str(lab.file("e.qcow2")), format="qcow2")
    assert str(vm.chain()) == "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2] <-- [e.qcow2]"
    assert xml_chain(name)[0] == str(lab.file("e.qcow2"))

    base = vm.chain().find("b.qcow2").node_name  # stream C and D into E, keeping [a] <-- [b]
    job = vm.block_stream(device="vda", base_node=base, job_id="job0")
    job.wait(timeout=60)
    assert job.outcome == "completed"
    assert str(vm.chain()) == "[a.qcow2] <-- [b.qcow2] <-- [e.qcow2]"
    true_to_libvirt(name, vm, lab, "ABCD")

    job = vm.block_stream(device="vda", job_id="job1")  # everything into the top
    job.wait(timeout=60)
    assert str(vm.chain()) == "[e.qcow2]"
    true_to_libvirt(name, vm, lab, "ABCD")
    assert str(lab.chain("e.qcow2")) == "[e.qcow2]", "e.qcow2 holds everything and has no backing file"
    assert list(vm.history.command[vm.history.command != "query-block-jobs"]) == [
        "blockdev-snapshot-sync",
        "block-stream",
        "block-stream",
    ]


def test_a_stream_into_an_intermediate_image_is_refused_and_sends_nothing(domain):
    name, vm = domain("ABCD")
    before = virsh("dumpxml", name)
    with pytest.raises(qb.InputError, match="intermediate"):
        vm.block_stream(device=vm.chain().find("c.qcow2").node_name, base_node=vm.chain().find("a.qcow2").node_name)
    assert virsh("dumpxml", name) == before
    assert virsh("blockjob", name, "vda", "--info").strip() == "No current block job for vda"
    assert vm.job_list == []


def test_commit_intermediate_then_active_with_pivot(domain, lab):
    name, vm = domain("ABCD")
    chain = vm.chain()
    job = vm.block_commit(
        device="vda", top_node=chain.find("c.qcow2").node_name, base_node=chain.find("a.qcow2").node_name
    )
    job.wait(timeout=60)
    assert str(vm.chain()) == "[a.qcow2] <-- [d.qcow2]"
    true_to_libvirt(name, vm, lab, "ABCD", ("a.qcow2", "ABC"))

    job = vm.block_commit(device="vda", speed="16M")  # active commit into the base
    job.wait_ready(timeout=60)
    assert job.status == "ready"
    assert "ready='yes'" in virsh("dumpxml", name)
    job.complete()
    job.wait(timeout=60)
    assert job.outcome == "completed"
    assert str(vm.chain()) == "[a.qcow2]"
    assert [r.name for r in vm.retired if not r.valid] == ["b.qcow2", "c.qcow2", "d.qcow2"]
    true_to_libvirt(name, vm, lab, "ABCD")


def test_active_commit_cancelled_after_ready_keeps_the_top(domain, lab):
    name, vm = domain("ABD")
    job = vm.block_commit(device="vda")
    job.wait_ready(timeout=60)
    job.cancel()
    job.wait(timeout=60)
    assert job.outcome == "completed"  # QEMU's word for a cancel after READY, kept over libvirt
    assert str(vm.chain()) == "[a.qcow2] <-- [b.qcow2] <-- [d.qcow2]"
    true_to_libvirt(name, vm, lab, "ABD", ("b.qcow2", "ABD"))  # the commit wrote D into b.qcow2


@pytest.mark.parametrize("sync", ["full", "top"])
def test_mirror_pivot_and_cancel(domain, lab, sync):
    name, vm = domain("ABCD")
    target = lab.file(f"m-{sync}.qcow2")
    job = vm.drive_mirror(device="vda", target=str(target), sync=sync, format="qcow2")
    job.wait_ready(timeout=60).complete().wait(timeout=60)
    expected = "[m-full.qcow2]" if sync == "full" else "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [m-top.qcow2]"
    assert str(vm.chain()) == expected
    true_to_libvirt(name, vm, lab, "ABCD")

    copy = lab.file(f"copy-{sync}.qcow2")
    job = vm.drive_mirror(device="vda", target=str(copy), sync=sync, format="qcow2")
    job.wait_ready(timeout=60)
    job.cancel()
    job.wait(timeout=60)
    assert str(vm.chain()) == expected, "a cancel keeps the disk where it was"
    true_to_libvirt(name, vm, lab, "ABCD", (copy.name, "ABCD"))  # and leaves a point-in-time copy


def test_mirror_sync_none_is_refused(domain, lab):
    name, vm = domain("AB")
    with pytest.raises(qb.InputError, match="sync=none"):
        vm.drive_mirror(device="vda", target=str(lab.file("n.qcow2")), sync="none", format="qcow2")
    assert not lab.file("n.qcow2").exists()
    assert virsh("blockjob", name, "vda", "--info").strip() == "No current block job for vda"


def test_push_backup_full_then_incremental(domain, lab):
    """The seed's incremental flow: a full backup and its bitmap at one instant, then only what changed since."""
    name, vm = domain("ABCD")
    full = str(lab.file("full.qcow2"))
    jobs = qb.transaction(
        vm,
        [
            qb.actions.bitmap_add("vda", "bitmap0"),
            qb.actions.action("drive-backup", device="vda", target=full, sync="full", format="qcow2"),
        ],
    )
    for job in jobs:
        job.wait(timeout=60)
    assert "bitmap0" in virsh("checkpoint-list", name, "--name")
    true_to_libvirt(name, vm, lab, "ABCD", ("full.qcow2", "ABCD"))


def wait_for_jobs(vm: qb.Machine, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for job in vm.job_list:
        job.wait(timeout=max(deadline - time.monotonic(), 1))


def test_views_of_what_the_guest_sees_need_no_monitor(domain, lab):
    name, vm = domain("ABC")
    assert vm.verify(expected_view("ABC"))
    assert not vm.read_matches(None, 0, "1M", 0xB2)
    assert vm.read_matches(None, "1M", "1M", 0xB2)
    subprocess.run(
        ["qemu-img", "convert", "-U", "-O", "qcow2", str(lab.file("c.qcow2")), str(lab.file("ref.qcow2"))], check=True
    )
    assert vm.compare(lab.file("ref.qcow2")), "qemu-img compare of the guest's view with a copy of the chain"
    lab.write("ref.qcow2", "2M", "64k", pattern=0x77)
    assert not vm.compare(lab.file("ref.qcow2"))
    assert not tainted(name)
    with pytest.raises(qb.InputError, match="passthrough=True"):
        vm.write(None, 0, "64k", pattern=0x5A)
    with pytest.raises(qb.UnknownCommand, match="passthrough=True"):
        vm.execute("x-debug-query-block-graph")
    assert virsh("blockjob", name, "vda", "--info").strip() == "No current block job for vda"


def test_a_job_started_by_virsh_is_followed(domain, lab):
    name, vm = domain("ABCD")
    virsh("blockcommit", name, "vda", "--active", "--bandwidth", "1")
    deadline = time.monotonic() + 10
    while not vm.job_list and time.monotonic() < deadline:
        time.sleep(0.05)
    job = vm.job_list[0]
    assert job.id == "vda"
    job.wait_ready(timeout=60)
    virsh("blockjob", name, "vda", "--pivot")
    job.wait(timeout=60)
    assert job.outcome == "completed"
    assert len(job.timeline) >= 1
    assert str(vm.chain()) == "[a.qcow2]"


def test_incremental_backups_copy_only_what_changed(domain, lab):
    """Each incremental backs up since the last one (a new checkpoint per backup), and restores the point in time."""
    name, vm = domain("ABC")
    full, first = str(lab.file("full.qcow2")), str(lab.file("inc1.qcow2"))
    jobs = qb.transaction(
        vm,
        [
            qb.actions.bitmap_add("vda", "bitmap0"),
            qb.actions.action("drive-backup", device="vda", target=full, sync="full", format="qcow2"),
        ],
    )
    jobs[0].wait(timeout=60)
    vm.blockdev_snapshot_sync(node_name="vda", snapshot_file=str(lab.file("d.qcow2")), format="qcow2")
    job = vm.drive_backup(device="vda", target=first, sync="incremental", bitmap="bitmap0", format="qcow2")
    job.wait(timeout=60)
    assert virsh("checkpoint-list", name, "--name").split() == ["bitmap0", "bitmap0.1"]
    assert (
        "--incremental" in vm.history.virsh.iloc[-1]
        or "<incremental>bitmap0</incremental>" in vm.history.virsh.iloc[-1]
    )
    true_to_libvirt(name, vm, lab, "ABC", ("full.qcow2", "ABC"))


def test_history_shows_each_command_as_virsh_runs_it(domain, lab):
    name, vm = domain("ABC")
    vm.block_stream(device="vda", base_node=vm.chain().find("a.qcow2").node_name, job_id="job0").wait(timeout=60)
    line = vm.history.set_index("command").virsh["block-stream"]
    index = re.search(r"--base '?(vda\[\d+\])", line).group(1)
    assert line.startswith(f"virsh blockpull {name} vda --base")
    assert xml_index(name, str(lab.file("a.qcow2"))) == index, "virsh's name for a.qcow2, read from the XML"


def xml_index(name: str, file: str) -> str:
    """virsh's name for ``file`` in the domain's live XML: ``vda[N]`` with N the index of its backingStore."""
    for store in ET.fromstring(virsh("dumpxml", name)).iter("backingStore"):
        source = store.find("source")
        if source is not None and source.get("file") == file:
            return f"vda[{store.get('index')}]"
    return ""


def test_the_guest_writes_through_snapshot_commit_and_mirror_and_a_restart_loses_nothing(domains, lab):
    """The tiny Linux writes records all along; libvirt boots what it last wrote, and a fresh boot reads it back."""
    lab.create("a.qcow2", size="64M")
    domain = domains.start(lab.file("a.qcow2"), guest=True)
    guest = boot_guest(domain)
    vm = qb.connect_libvirt(domain.name, URI)
    try:
        guest.start_writer(**WRITER)
        vm.blockdev_snapshot_sync(node_name="vda", snapshot_file=str(lab.file("b.qcow2")), format="qcow2")
        time.sleep(1.5)
        job = vm.block_commit(device="vda")
        job.wait_ready(timeout=120).complete().wait(timeout=120)
        assert str(vm.chain()) == "[a.qcow2]"
        time.sleep(1)
        job = vm.drive_mirror(device="vda", target=str(lab.file("m.qcow2")), sync="full", format="qcow2")
        job.wait_ready(timeout=120).complete().wait(timeout=120)
        assert str(vm.chain()) == "[m.qcow2]"
        time.sleep(1)
        report = guest.stop_writer()
        assert report.ok, str(report)
        written = {
            r: max(rounds) for r, rounds in guest.point_in_time(time.time(), slack=0).items() if rounds != {None}
        }
        assert written, "the writer finished records"
        assert xml_chain(domain.name) == [str(lab.file("m.qcow2"))] and not tainted(domain.name)

        booted = boot_guest(domain, restart(domain.name))
        sums = records_in(booted, max(written) + 1, 64 << 10, 8 << 20)
        lost = [
            r
            for r, round_ in written.items()
            if sums[r] != hashlib.md5(expected_record(r, round_, 64 << 10)).hexdigest()
        ]
        assert lost == [], f"records the restarted guest does not read back: {lost}"
        assert xml_chain(domain.name) == [str(lab.file("m.qcow2"))]
    finally:
        vm.session.close()


def test_an_active_commit_ready_at_once_is_completed(domain, lab):
    """An empty top is READY before libvirt's call returns: the Job still sees running, then ready."""
    name, vm = domain("AB")
    vm.blockdev_snapshot_sync(node_name="vda", snapshot_file=str(lab.file("e.qcow2")), format="qcow2")
    job = vm.block_commit(device="vda")
    job.wait_ready(timeout=30).complete().wait(timeout=30)
    assert list(job.events.status.dropna())[:3] == ["created", "running", "ready"]
    assert str(vm.chain()) == "[a.qcow2]", "with no base, into the bottom of the chain, as QEMU does"
    true_to_libvirt(name, vm, lab, "AB")


def test_relative_file_names_are_refused_before_anything_is_sent(domain):
    name, vm = domain("AB")
    with pytest.raises(qb.InputError, match=r"relative file name.*absolute paths only"):
        vm.blockdev_snapshot_sync(node_name="vda", snapshot_file="e.qcow2", format="qcow2")
    assert str(vm.chain()) == "[a.qcow2] <-- [b.qcow2]" and len(xml_chain(name)) == 2


def test_a_backup_that_ends_while_the_guest_view_is_read_still_ends(domain, lab):
    """The view's own pull-mode backup and the user's push backup both end with BLOCK_JOB_2: each to its own."""
    name, vm = domain("ABC")
    job = vm.drive_backup(device="vda", target=str(lab.file("full.qcow2")), sync="full", format="qcow2")
    try:
        assert vm.verify(expected_view("ABC"))
    except qb.Error as busy:  # libvirt runs one backup at a time: the view waits for none, and says so
        assert "backup" in str(busy).lower()
    job.wait(timeout=60)
    assert job.outcome == "completed"
    assert vm.verify(expected_view("ABC"))
    true_to_libvirt(name, vm, lab, "ABC", ("full.qcow2", "ABC"))
