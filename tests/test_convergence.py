"""Mirrors that converge: ``copy-mode=write-blocking``, at the start or switched to with ``job.change``.

The tiny Linux guest rewrites a 4 MiB region of its disk as fast as it can while a mirror copies the disk to a
target behind a throttle filter (512 KiB/s of writes): in the default background mode the mirror's dirty
backlog keeps growing and READY never comes; after ``job.change(copy_mode="write-blocking")`` (where QEMU has
``block-job-change``) it shrinks to READY, and the target, once the writer stops, equals the disk. Where QEMU
lacks ``block-job-change`` (7.2) the change is refused with a sentence and nothing is sent, and a mirror started
in write-blocking mode converges instead. Without a guest: both mirror commands take ``copy_mode``, the
mirror form offers it, and the job monitor shows the backlog line.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

import qblocknb as qb
from qblocknb.widgets.backlog import backlog_html
from qblocknb.widgets.forms import MirrorForm
from qblocknb.widgets.jobmonitor import JobMonitor

MiB = 1 << 20
WRITER = {"size": "4M", "record": "64k", "offset": "4M"}  # no rate: as fast as the guest can
TARGET_RATE = 512 << 10  # bytes/s the throttled target takes: well under what the guest writes
STALL = 6.0  # seconds a background mirror is given to show it does not converge
READY_TIMEOUT = 90.0


def throttled_target(lab: qb.Lab, vm: qb.Machine, name: str) -> str:
    """A fresh qcow2 behind a ``throttle`` filter node of group ``tg0``: a slow target. Returns the filter node."""
    lab.create(f"{name}.qcow2", size="16M")
    if not any(o["name"] == "tg0" for o in vm.qom_list(path="/objects")):
        vm.object_add(qom_type="throttle-group", id="tg0", limits={"bps-write": TARGET_RATE})
    vm.blockdev_add(driver="qcow2", node_name=name, file={"driver": "file", "filename": str(lab.file(f"{name}.qcow2"))})
    vm.blockdev_add(driver="throttle", node_name=f"{name}-slow", throttle_group="tg0", file=name)
    return f"{name}-slow"


@pytest.fixture(scope="module")
def guest_vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[qb.Lab, qb.Machine]]:
    with qb.Lab(tmp_path_factory.mktemp("converge") / "lab") as lab:
        lab.create("a.qcow2", size="16M")
        yield lab, lab.launch("a.qcow2", node_name="node-A", guest=True)


def test_a_mirror_under_heavy_writes_converges_once_write_blocking(guest_vm):
    lab, vm = guest_vm
    vm.guest.start_writer(**WRITER)
    time.sleep(2.0)  # the whole region is written once: the mirror starts with all of it to copy
    job = vm.blockdev_mirror(device="node-A", target=throttled_target(lab, vm, "t0"), sync="top", job_id="m0")
    monitor = JobMonitor(job, plot=False)
    time.sleep(STALL)
    backlog = job.backlog
    print(f"\nbackground mode after {STALL} s: {job.status}, backlog {backlog}")
    assert not job.ready, "the background mirror converged: the guest did not outpace the throttled target"
    assert backlog is not None and backlog.bytes > MiB
    monitor.update()
    assert "dirty backlog" in monitor.backlog.value and "dirty backlog" in backlog_html(job)
    if vm.has_command("block-job-change"):
        switched = time.monotonic()
        job.change(copy_mode="write-blocking")
        assert vm.history.iloc[-1]["command"] == "block-job-change"
    else:
        sent = len(vm.history)
        with pytest.raises(qb.JobError, match="this QEMU has no block-job-change"):
            job.change(copy_mode="write-blocking")
        assert len(vm.history) == sent, "a refused change sent something"
        job.cancel().wait()
        switched = time.monotonic()
        target = throttled_target(lab, vm, "t1")
        job = vm.blockdev_mirror(device="node-A", target=target, sync="top", job_id="m1", copy_mode="write-blocking")
    job.wait_ready(timeout=READY_TIMEOUT)
    print(f"write-blocking: READY {time.monotonic() - switched:.1f} s after the switch")
    report = vm.guest.stop_writer()
    assert report.ok, str(report)
    monitor.close()
    job.cancel().wait()  # after READY: the target is the disk as it is now
    assert vm.compare(lab.file(f"{job.target.removesuffix('-slow')}.qcow2")).identical


# -- without a guest --------------------------------------------------------------------------------------------
@pytest.fixture
def vm(tmp_path) -> Iterator[qb.Machine]:
    with qb.Lab(tmp_path / "lab") as lab:
        lab.create("a.qcow2", size="16M")
        lab.write("a.qcow2", 0, "2M", pattern=0xA1)
        lab.create("e.qcow2", size="16M")
        yield lab.launch("a.qcow2", node_name="node-A")


@pytest.mark.parametrize("command", ["drive-mirror", "blockdev-mirror"])
def test_both_mirror_commands_take_copy_mode(vm, command):
    target = {"target": "f.qcow2", "format": "qcow2"}
    if command == "blockdev-mirror":
        vm.blockdev_add(driver="qcow2", node_name="node-E", file={"driver": "file", "filename": "e.qcow2"})
        target = {"target": "node-E"}
    job = vm.execute(
        command, {"device": "node-A", "sync": "full", "job-id": "m0", **target}, copy_mode="write-blocking"
    )
    job.wait_ready(timeout=30)
    vm.write("virtio0", "1M", "64k", pattern=0x5B)
    job.complete().wait(timeout=30)
    started = vm.history[vm.history["command"] == command].iloc[-1]
    assert started["arguments"]["copy-mode"] == "write-blocking"
    assert vm.verify([(0, "1M", 0xA1), ("1M", "64k", 0x5B), ("1088k", "960k", 0xA1)])
    assert str(vm.chain()) == f"[{target['target'] if command == 'drive-mirror' else 'e.qcow2'}]"


def test_job_change_refuses_what_qemu_would_with_a_sentence(vm):
    job = vm.drive_mirror(device="node-A", target="f.qcow2", format="qcow2", sync="full", job_id="m0", speed="64k")
    sent = len(vm.history)
    with pytest.raises(qb.JobError, match="only to write-blocking"):
        job.change(copy_mode="background")
    if not vm.has_command("block-job-change"):
        with pytest.raises(qb.JobError, match="start the mirror with copy_mode='write-blocking'"):
            job.change()
    assert len(vm.history) == sent
    job.cancel().wait()
    with pytest.raises(qb.JobError, match="an ended job"):
        job.change()
    backup = vm.drive_backup(device="node-A", target="g.qcow2", format="qcow2", sync="full", speed="64k")
    with pytest.raises(qb.JobError, match="it is a backup; only a running mirror"):
        backup.change()
    backup.cancel().wait()


def test_the_mirror_form_offers_copy_mode(vm):
    form = MirrorForm(vm)
    assert "copy-mode" not in form.arguments()
    form.fields["copy-mode"].value = "write-blocking"
    assert form.arguments()["copy-mode"] == "write-blocking"
