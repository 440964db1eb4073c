"""drive-mirror and blockdev-mirror: sync modes, cancel vs complete after READY, cancel before READY."""

from __future__ import annotations

import pytest

import qblocknb as qb
from qblocknb.teaching.seedchain import build_seed_chain, expected_view

SEED = "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]"


def start_mirror(vm: qb.Machine, lab: qb.Lab, command: str, sync: str, **extra) -> qb.Job:
    """Start a mirror of node-D into e.qcow2, preparing the target the way each command needs."""
    if command == "drive-mirror":
        # QEMU creates e.qcow2: standalone for full, on top of D's backing for top, on top of D for none.
        return vm.drive_mirror(device="node-D", target="e.qcow2", sync=sync, format="qcow2", job_id="job0", **extra)
    # For sync=top the target is an overlay of D's backing (c.qcow2), attached on the node QEMU already has open.
    backing = "node-C" if sync == "top" else None
    if backing:
        lab.create("e.qcow2", backing="c.qcow2")
    else:
        lab.create("e.qcow2", size="64M")
    vm.blockdev_add(driver="qcow2", node_name="node-E", file={"driver": "file", "filename": "e.qcow2"}, backing=backing)
    return vm.blockdev_mirror(device="node-D", target="node-E", sync=sync, job_id="job0", **extra)


@pytest.mark.parametrize("command", ["drive-mirror", "blockdev-mirror"])
@pytest.mark.parametrize("sync", ["full", "top"])
def test_cancel_after_ready_gives_point_in_time_copy(seed_vm, lab, command, sync):
    job = start_mirror(seed_vm, lab, command, sync)
    job.wait_ready(timeout=60)
    job.cancel().wait(timeout=60)
    events = set(job.events["event"])
    assert "BLOCK_JOB_COMPLETED" in events and "BLOCK_JOB_CANCELLED" not in events
    assert job.outcome == "completed"
    assert str(seed_vm.chain()) == SEED, "cancel leaves the device on its own chain"
    if command == "blockdev-mirror":
        seed_vm.blockdev_del(node_name="node-E")
    seed_vm.flush()
    expected_chain = "[e.qcow2]" if sync == "full" else "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [e.qcow2]"
    assert str(lab.chain("e.qcow2")) == expected_chain
    assert lab.compare("d.qcow2", "e.qcow2"), "the copy reads exactly as the guest does"
    if sync == "top":
        assert not lab.read_matches("e.qcow2", "3M", "1M", 0) and lab.read_matches("e.qcow2", "3M", "1M", 0xD4)


@pytest.mark.parametrize("command", ["drive-mirror", "blockdev-mirror"])
def test_sync_none_copies_only_new_writes(seed_vm, lab, command):
    job = start_mirror(seed_vm, lab, command, "none")
    job.wait_ready(timeout=60)
    seed_vm.write("virtio0", "5M", "64k", pattern=0x5A)
    job.cancel().wait(timeout=60)
    if command == "blockdev-mirror":
        seed_vm.blockdev_del(node_name="node-E")
    seed_vm.flush()
    assert lab.read_matches("e.qcow2", "5M", "64k", 0x5A)
    assert lab.runs_match("d.qcow2", expected_view("ABCD")), "cancel leaves D as it was"
    allocated = [m for m in lab.map("e.qcow2") if m["data"] and m["depth"] == 0]
    assert [(m["start"], m["length"]) for m in allocated] == [(5 << 20, 64 << 10)], "only the new write was copied"
    if command == "blockdev-mirror":
        assert lab.read_matches("e.qcow2", 0, "4M", 0), "a standalone target has nothing but the new write"


@pytest.mark.parametrize("command", ["drive-mirror", "blockdev-mirror"])
def test_complete_pivots_device_to_target(seed_vm, lab, command):
    job = start_mirror(seed_vm, lab, command, "full")
    job.wait_ready(timeout=60)
    job.complete().wait(timeout=60)
    assert job.outcome == "completed"
    chain = seed_vm.chain()
    assert str(chain) == "[e.qcow2]" and chain.active.device == "virtio0"
    assert seed_vm.verify(expected_view("ABCD"))
    seed_vm.write("virtio0", "6M", "64k", pattern=0x6B)
    assert seed_vm.verify([("6M", "64k", 0x6B)], image=lab.file("e.qcow2"))
    assert not lab.read_matches("d.qcow2", "6M", "64k", 0x6B), "after the pivot the old chain gets no writes"


def test_cancel_before_ready_is_cancelled(seed_vm, lab):
    job = seed_vm.drive_mirror(
        device="node-D", target="e.qcow2", sync="full", format="qcow2", job_id="job0", speed=64 << 10
    )
    job.cancel().wait(timeout=60)
    events = list(job.events["event"])
    assert "BLOCK_JOB_CANCELLED" in events and "BLOCK_JOB_READY" not in events
    assert job.outcome == "cancelled"
    assert str(seed_vm.chain()) == SEED
    assert seed_vm.verify(expected_view("ABCD"))


def test_sync_none_then_complete_leaves_the_target_on_top_of_the_old_chain(lab):
    """The pivot reopens d.qcow2 read-only under e.qcow2; the flush must still reach D's unflushed metadata."""
    seed_vm = build_seed_chain(lab)  # no flush since D's guest write, unlike the seed_vm fixture
    job = seed_vm.drive_mirror(device="node-D", target="e.qcow2", sync="none", format="qcow2", job_id="job0")
    job.wait_ready(timeout=60)
    seed_vm.write("virtio0", "5M", "64k", pattern=0x5A)
    job.complete().wait(timeout=60)
    assert str(seed_vm.chain()) == f"{SEED} <-- [e.qcow2]"
    assert seed_vm.verify([("5M", "64k", 0x5A), *expected_view("ABCD")])
    assert lab.runs_match("d.qcow2", expected_view("ABCD")), "the old active layer reads as it did at the pivot"
