"""The tiny test guest: it boots, its shell answers (and survives a hang), and its writer's data survives block jobs.

Real QEMU, real kernel, real guest. Boot times are printed (``pytest -s`` shows them); they are not asserted.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time

import pytest

import qblocknb as qb
from qblocknb.live import guestimage
from qblocknb.live.guest import GuestError, expected_record


@pytest.fixture(scope="module")
def guest_lab(tmp_path_factory: pytest.TempPathFactory):
    with qb.Lab(tmp_path_factory.mktemp("guest") / "lab") as lab:
        lab.create("a.qcow2", size="64M")
        yield lab


@pytest.fixture(scope="module")
def vm(guest_lab: qb.Lab) -> qb.Machine:
    vm = guest_lab.launch("a.qcow2", node_name="node-A", guest=True)
    args = vm.process.args
    accel = " ".join(f"-accel {value}" for option, value in itertools.pairwise(args) if option == "-accel")
    print(f"\nguest booted in {vm.guest.boot_seconds:.1f} s ({accel})")
    return vm


def test_shell_runs_commands(vm):
    assert vm.guest.shell("uname -r") == guestimage.find_kernel()[0]
    assert "vda" in vm.guest.shell("cat /proc/partitions").split()
    assert vm.guest.shell("echo one; echo two >&2") == "one\ntwo", "stderr comes back too"
    with pytest.raises(GuestError, match="exit status 1: ls: /nonexistent"):
        vm.guest.shell("ls /nonexistent")


def test_a_hung_command_times_out_and_the_shell_answers_again(vm):
    started = time.monotonic()
    with pytest.raises(qb.Timeout, match="did not finish within 2 s: it was interrupted with Ctrl-C;"):
        vm.guest.shell("sleep 100", timeout=2)
    assert time.monotonic() - started < 15
    assert vm.guest.shell("echo still here") == "still here"


def test_the_writer_keeps_its_data_through_a_stream_and_a_backup(vm, guest_lab):
    guest = vm.guest
    guest.start_writer(size="4M", record="64k")
    time.sleep(1.5)
    vm.blockdev_snapshot_sync(node_name="node-A", snapshot_file="b.qcow2", snapshot_node_name="node-B", format="qcow2")
    time.sleep(0.5)
    streaming = time.time()
    job = vm.block_stream(device="node-B", job_id="job0", speed="2M")  # slow enough to overlap many writes
    assert job.wait(timeout=120).outcome == "completed"
    streamed = time.time()
    assert str(vm.chain()) == "[b.qcow2]"
    progress = guest.writer_progress
    during = progress[(progress["kind"] == "W") & progress["t"].between(streaming, streamed)]
    print(f"\n{len(during)} records written during the {streamed - streaming:.1f} s stream")
    assert len(during) > 0

    before = time.time()
    job = vm.drive_backup(device="node-B", target="c.qcow2", sync="full", format="qcow2", job_id="job1")
    after = time.time()
    time.sleep(0.5)
    assert job.wait(timeout=120).outcome == "completed"
    report = guest.stop_writer()
    assert report.ok, str(report)
    assert report.records_written > 0 and report.records_checked > 0
    progress = guest.writer_progress
    assert list(progress.columns) == ["t", "kind", "record", "round", "bytes_written"]
    assert progress["bytes_written"].iloc[-1] == report.records_written * 65536

    # The backup holds the disk as it was when the job started: record by record, one allowed round.
    raw = guest_lab.file("c.raw")
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(guest_lab.file("c.qcow2")), str(raw)], check=True)
    assert guest.check_copy(raw, before, after) == []
    held = guest.point_in_time(before, after)
    assert any(r is not None for rounds in held.values() for r in rounds), "the writer had written before the backup"
    with open(raw, "rb") as copy:  # a record that was not being written then holds one round, whole
        settled = next(i for i, rounds in held.items() if len(rounds) == 1 and None not in rounds)
        copy.seek(settled * 65536)
        assert copy.read(65536) == expected_record(settled, next(iter(held[settled])), 65536)

    vm.flush()
    for image in ("a.qcow2", "b.qcow2", "c.qcow2"):
        assert guest_lab.check(image)["check-errors"] == 0


def test_a_killed_qemu_is_an_error_not_a_hang(guest_lab):
    """Also the TCG boot time: the accelerator Binder has."""
    guest_lab.create("t.qcow2", size="16M")
    vm = guest_lab.launch("t.qcow2", node_name="node-T", accel="tcg", guest=True)
    print(f"\nguest booted in {vm.guest.boot_seconds:.1f} s (-accel tcg)")
    assert vm.guest.shell("echo hello") == "hello"
    os.kill(vm.pid, signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(qb.QEMUGone, match="killed by signal 9"):
        vm.guest.shell("echo anyone", timeout=30)
    assert time.monotonic() - started < 5


def test_no_readable_kernel_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(guestimage, "BOOT", tmp_path)
    (tmp_path / "vmlinuz-6.1.0-99-amd64").write_bytes(b"")
    (tmp_path / "vmlinuz-6.1.0-99-amd64").chmod(0)
    with pytest.raises(qb.Error, match="linux-image-amd64") as raised:
        guestimage.boot_files()
    assert "root only" in str(raised.value)
