"""Incremental backup with dirty bitmaps: the cycle, a failure and its retry, transactions, bitmap helpers."""

from __future__ import annotations

import subprocess

import pytest

import qblocknb as qb
from qblocknb.backup import actions, bitmaps
from qblocknb.backup.incremental import FAULT, IncrementalBackup

KiB, MiB = 1 << 10, 1 << 20
CLUSTER = 64 * KiB


@pytest.fixture
def vm(lab: qb.Lab) -> qb.Machine:
    """A disk whose first 4 MiB hold 0xA1, live as node-A."""
    lab.create("a.qcow2", size="64M")
    lab.write("a.qcow2", 0, "4M", pattern=0xA1)
    return lab.launch("a.qcow2", node_name="node-A")


def keep_view(lab: qb.Lab, vm: qb.Machine, name: str) -> str:
    """A copy of what the guest reads now, to compare a backup with later."""
    vm.flush()
    subprocess.run(["qemu-img", "convert", "-U", "-O", "qcow2", "a.qcow2", name], cwd=lab.path, check=True, timeout=60)
    return name


def clusters(writes: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """The 64 KiB clusters a list of writes touches, as merged (start, length) runs."""
    touched = sorted(
        {c for offset, length, _ in writes for c in range(offset // CLUSTER, -(-(offset + length) // CLUSTER))}
    )
    runs: list[tuple[int, int]] = []
    for c in touched:
        if runs and runs[-1][0] + runs[-1][1] == c * CLUSTER:
            runs[-1] = (runs[-1][0], runs[-1][1] + CLUSTER)
        else:
            runs.append((c * CLUSTER, CLUSTER))
    return runs


def own_data(lab: qb.Lab, image: str) -> list[tuple[int, int]]:
    """The ranges an image holds itself (depth 0), from ``qemu-img map``."""
    return [(m["start"], m["length"]) for m in lab.map(image) if m["data"] and m["depth"] == 0]


ROUNDS = [
    [(8 * MiB, 64 * KiB, 0x11)],
    [(1 * MiB, 100 * KiB, 0x12), (20 * MiB, 64 * KiB, 0x13)],
    [(8 * MiB, 64 * KiB, 0x14), (33 * MiB, 1 * KiB, 0x15)],
]


def test_each_restored_backup_equals_the_guest_view_of_its_time(lab, vm):
    cycle = IncrementalBackup(vm)
    full = cycle.full()
    assert full.ok and full.job.command == "blockdev-backup" and full.job.outcome == "completed"
    views = [keep_view(lab, vm, "view0.qcow2")]
    for number, writes in enumerate(ROUNDS, 1):
        for offset, length, pattern in writes:
            vm.write("virtio0", offset, length, pattern=pattern)
        backup = cycle.incremental()
        views.append(keep_view(lab, vm, f"view{number}.qcow2"))
        expected = clusters(writes)
        assert backup.dirty_bytes == sum(length for _, length in expected), "the bitmap recorded exactly those"
        assert own_data(lab, backup.file.name) == expected, "an incremental holds only the changed clusters"
        assert backup.stored_bytes == backup.dirty_bytes
        assert bitmaps.find(vm, "node-A", "bitmap0").dirty_bytes == 0, "a good incremental clears the bitmap"

    for number, view in enumerate(views):
        restored = f"backup{number}.qcow2"
        assert str(lab.chain(restored)) == " <-- ".join(f"[backup{i}.qcow2]" for i in range(number + 1))
        assert lab.compare(restored, view), f"{restored} reads as the guest did at backup {number}"
    assert lab.read_matches("backup1.qcow2", 8 * MiB, 64 * KiB, 0x11)
    assert lab.read_matches("backup3.qcow2", 8 * MiB, 64 * KiB, 0x14)
    assert lab.compare("a.qcow2", str(cycle.latest))
    assert list(cycle.frame["outcome"]) == ["completed"] * 4
    assert list(cycle.frame["kind"]) == ["full", "incremental", "incremental", "incremental"]
    table = bitmaps.frame(vm)
    assert table.to_dict("records") == [
        {
            "name": "bitmap0",
            "node": "node-A",
            "file": "a.qcow2",
            "granularity": CLUSTER,
            "dirty_bytes": 0,
            "recording": True,
            "persistent": False,
            "busy": False,
        }
    ]
    assert str(vm.chain()) == "[a.qcow2]", "backups never change the guest's chain"


def test_a_failed_incremental_keeps_the_bitmap_and_the_retry_loses_nothing(lab, vm):
    cycle = IncrementalBackup(vm)
    with pytest.raises(qb.Error, match=r"the full backup into backup0\.qcow2 failed: Input/output error"):
        cycle.full(inject_error=FAULT)
    assert bitmaps.frame(vm).empty, "a failed full backup takes its bitmap along, so full() starts clean"
    cycle.full()
    vm.write("virtio0", 5 * MiB, 64 * KiB, pattern=0x21)
    with pytest.raises(qb.Error) as caught:
        cycle.incremental(inject_error=FAULT)  # blkdebug fails every data write to the target
    assert str(caught.value) == (
        "the incremental backup into backup1.qcow2 failed: Input/output error; nothing is lost: bitmap 'bitmap0' "
        "on node-A still records 64 KiB changed since backup0.qcow2; fix the cause and call incremental() again."
    )
    assert not lab.file("backup1.qcow2").exists(), "the broken target is discarded"
    assert bitmaps.find(vm, "node-A", "bitmap0").dirty_bytes == 64 * KiB
    vm.write("virtio0", 9 * MiB, 128 * KiB, pattern=0x22)  # the guest goes on writing before the retry

    retry = cycle.incremental()
    assert retry.file.name == "backup1.qcow2" and retry.dirty_bytes == 192 * KiB
    assert own_data(lab, "backup1.qcow2") == [(5 * MiB, 64 * KiB), (9 * MiB, 128 * KiB)]
    vm.flush()
    assert lab.compare("a.qcow2", "backup1.qcow2"), "both the failed round's and the new writes are in the backup"
    assert lab.read_matches("backup1.qcow2", 5 * MiB, 64 * KiB, 0x21)
    assert lab.read_matches("backup1.qcow2", 9 * MiB, 128 * KiB, 0x22)
    assert list(cycle.frame["outcome"]) == ["failed", "completed", "failed", "completed"]
    assert [job.outcome for job in vm.job_list] == ["failed", "completed", "failed", "completed"]


def attach(lab: qb.Lab, vm: qb.Machine, name: str) -> str:
    """A fresh 64 MiB qcow2 attached as a node of the same name (without the suffix)."""
    lab.create(name, size="64M")
    node = name.removesuffix(".qcow2")
    vm.blockdev_add(driver="qcow2", node_name=node, file={"driver": "file", "filename": name})
    return node


def test_a_transaction_happens_entirely_or_not_at_all(lab, vm):
    target = attach(lab, vm, "full.qcow2")
    refused = [
        actions.bitmap_add("node-A", "before"),
        actions.blockdev_backup("node-A", target, sync="full"),
        actions.bitmap_add("node-X", "nowhere"),
    ]
    with pytest.raises(qb.CommandError):
        actions.run(vm, refused)
    assert bitmaps.frame(vm).empty and vm.job_list == [], "neither the bitmap nor the job happened"

    jobs = actions.run(vm, [actions.bitmap_add("node-A", "daily"), actions.bitmap_add("node-A", "weekly"), refused[1]])
    assert [job.command for job in jobs] == ["blockdev-backup"]
    jobs[0].wait(timeout=30)
    vm.blockdev_del(node_name=target)
    assert sorted(bitmaps.frame(vm)["name"]) == ["daily", "weekly"]
    assert lab.compare("a.qcow2", "full.qcow2")


def test_grouped_backups_fail_together(lab, vm):
    good = attach(lab, vm, "good.qcow2")
    lab.create("bad.qcow2", size="64M")
    broken = {"driver": "blkdebug", "image": {"driver": "file", "filename": "bad.qcow2"}, "inject-error": [FAULT]}
    vm.blockdev_add(driver="qcow2", node_name="bad", file=broken)
    jobs = actions.run(
        vm,
        [actions.blockdev_backup("node-A", good, sync="full"), actions.blockdev_backup("node-A", "bad", sync="full")],
        completion_mode="grouped",
    )
    with pytest.raises(qb.JobError, match="Input/output error"):
        jobs[1].wait(timeout=30)
    jobs[0].wait(timeout=30)
    assert [job.outcome for job in jobs] == ["cancelled", "failed"], "the good backup does not finish alone"
    assert "BLOCK_JOB_CANCELLED" in set(jobs[0].events["event"])
    assert str(vm.chain()) == "[a.qcow2]" and vm.verify([(0, 4 * MiB, 0xA1)])


def test_bitmap_helpers_and_sync_bitmap_modes(lab, vm):
    bitmaps.add(vm, "node-A", "b0", granularity=CLUSTER)
    vm.write("virtio0", 6 * MiB, 64 * KiB, pattern=0x31)
    assert bitmaps.disable(vm, "node-A", "b0").recording is False
    vm.write("virtio0", 7 * MiB, 64 * KiB, pattern=0x32)
    bitmaps.add(vm, "node-A", "b1")
    vm.write("virtio0", 10 * MiB, 64 * KiB, pattern=0x33)
    assert bitmaps.find(vm, "node-A", "b0").dirty_bytes == 64 * KiB, "a disabled bitmap records nothing new"
    assert bitmaps.merge(vm, "node-A", "b0", ["b1"]).dirty_bytes == 128 * KiB
    assert bitmaps.enable(vm, "node-A", "b0").recording is True
    with pytest.raises(qb.Error, match="node 'node-A' has no bitmap 'nope': its bitmaps are b0, b1"):
        bitmaps.clear(vm, "node-A", "nope")

    if vm.accepts("blockdev-backup", "bitmap-mode"):
        target = attach(lab, vm, "never.qcow2")
        bitmaps.backup(vm, "node-A", target, "b0", sync="bitmap", bitmap_mode="never").wait(timeout=30)
        vm.blockdev_del(node_name=target)
        assert bitmaps.find(vm, "node-A", "b0").dirty_bytes == 128 * KiB, "bitmap-mode never keeps the bitmap"
        assert own_data(lab, "never.qcow2") == [(6 * MiB, 64 * KiB), (10 * MiB, 64 * KiB)]
        assert lab.read_matches("never.qcow2", 6 * MiB, 64 * KiB, 0x31)
        assert lab.read_matches("never.qcow2", 10 * MiB, 64 * KiB, 0x33)
    with pytest.raises(qb.Error, match="sync='bitmap' needs a bitmap_mode"):
        bitmaps.backup(vm, "node-A", "node-A", "b0", sync="bitmap")

    assert bitmaps.clear(vm, "node-A", "b0").dirty_bytes == 0
    bitmaps.remove(vm, "node-A", "b1")
    bitmaps.add(vm, "node-A", "kept", persistent=True)
    assert sorted(bitmaps.frame(vm)["name"]) == ["b0", "kept"]
    vm.quit()  # a persistent bitmap is written into the qcow2 file when the image is closed
    on_disk = lab.chain("a.qcow2").images[0].bitmaps
    assert [(b.name, b.persistent) for b in on_disk] == [("kept", True)]
