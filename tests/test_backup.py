"""drive-backup and blockdev-backup: full / top / none, and the point in time of a backup."""

from __future__ import annotations

import pytest

import qblocknb as qb
from qblocknb.teaching.seedchain import expected_view

SEED = "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]"


def start_backup(vm: qb.Machine, lab: qb.Lab, command: str, sync: str, **extra) -> qb.Job:
    """Back node-D up into e.qcow2; blockdev-backup needs the target created and attached first."""
    if command == "drive-backup":
        return vm.drive_backup(device="node-D", target="e.qcow2", sync=sync, format="qcow2", job_id="job0", **extra)
    if sync == "top":
        lab.create("e.qcow2", backing="c.qcow2")
    else:
        lab.create("e.qcow2", size="64M")
    vm.blockdev_add(
        driver="qcow2",
        node_name="node-E",
        file={"driver": "file", "filename": "e.qcow2"},
        backing="node-C" if sync == "top" else None,
    )
    return vm.blockdev_backup(device="node-D", target="node-E", sync=sync, job_id="job0", **extra)


def detach(vm: qb.Machine, command: str) -> None:
    if command == "blockdev-backup":
        vm.blockdev_del(node_name="node-E")


@pytest.mark.parametrize("command", ["drive-backup", "blockdev-backup"])
@pytest.mark.parametrize("sync", ["full", "top"])
def test_backup_copies_the_chain(seed_vm, lab, command, sync):
    job = start_backup(seed_vm, lab, command, sync)
    job.wait(timeout=60)
    assert job.outcome == "completed" and not job.ready, "a backup ends by itself, with no READY"
    assert str(seed_vm.chain()) == SEED
    detach(seed_vm, command)
    seed_vm.flush()
    expected = "[e.qcow2]" if sync == "full" else "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [e.qcow2]"
    assert str(lab.chain("e.qcow2")) == expected
    assert lab.compare("d.qcow2", "e.qcow2")
    own = {(m["start"], m["length"]) for m in lab.map("e.qcow2") if m["data"] and m["depth"] == 0}
    if sync == "top":
        assert own == {(3 << 20, 1 << 20)}, "sync=top copies only what D itself holds"


@pytest.mark.parametrize("command", ["drive-backup", "blockdev-backup"])
def test_sync_none_copies_only_what_the_guest_overwrites(seed_vm, lab, command):
    job = start_backup(seed_vm, lab, command, "none")
    seed_vm.write("virtio0", "3M", "64k", pattern=0x5A)
    job.cancel().wait(timeout=60)
    detach(seed_vm, command)
    seed_vm.flush()
    assert seed_vm.verify([("3M", "64k", 0x5A)])
    own = [(m["start"], m["length"]) for m in lab.map("e.qcow2") if m["data"] and m["depth"] == 0]
    assert own == [(3 << 20, 64 << 10)], "only the overwritten cluster was copied out"
    assert lab.read_matches("e.qcow2", "3M", "64k", 0xD4), "the target holds the data from before the write"


@pytest.mark.parametrize("command", ["drive-backup", "blockdev-backup"])
def test_backup_is_a_point_in_time(seed_vm, lab, command):
    job = start_backup(seed_vm, lab, command, "full", speed=1 << 20)
    seed_vm.write("virtio0", 0, "1M", pattern=0x5A)
    seed_vm.write("virtio0", "3M", "1M", pattern=0x5B)
    assert not job.ended, "the writes must land while the backup still runs"
    during = seed_vm.chain()  # the device's root is now a copy-before-write filter; the chain is still all there
    assert str(during) == SEED
    assert [(j.id, j.source, j.target) for j in during.jobs] == [("job0", "node-D", job.target)]
    assert [t.name for t in during.targets] == ["e.qcow2"] and during.targets[0].format == "qcow2"
    job.set_speed(0).wait(timeout=60)
    detach(seed_vm, command)
    assert seed_vm.verify([(0, "1M", 0x5A), ("3M", "1M", 0x5B)]), "the guest sees its new writes"
    assert all(lab.read_matches("e.qcow2", *run) for run in expected_view("ABCD")), "the backup does not"


@pytest.mark.parametrize("command", ["blockdev-backup", "blockdev-mirror"])
def test_a_finished_jobs_open_target_reads_right_on_disk_with_no_stop_or_flush(seed_vm, lab, command):
    """job.wait() flushes a target that stays open in QEMU, so outside readers need nothing more."""
    lab.create("e.qcow2", size="64M")
    seed_vm.blockdev_add(driver="qcow2", node_name="node-E", file={"driver": "file", "filename": "e.qcow2"})
    if command == "blockdev-backup":
        seed_vm.blockdev_backup(device="node-D", target="node-E", sync="full", job_id="job0").wait(timeout=60)
    else:
        job = seed_vm.blockdev_mirror(device="node-D", target="node-E", sync="full", job_id="job0")
        job.wait_ready(timeout=60).cancel().wait(timeout=60)  # after READY: a point-in-time copy, no pivot
    assert seed_vm.query_status()["status"] == "prelaunch"  # never stopped or resumed by the check
    assert lab.runs_match("e.qcow2", expected_view("ABCD"))
    assert lab.check("e.qcow2")["check-errors"] == 0
