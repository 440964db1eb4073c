"""Dead QEMUs and labs: a sentence every time, never a hang (the bad-input catalogue is tests/test_bad_input.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import qblocknb as qb
from qblocknb.live.process import command_line


def test_qemu_killed_during_a_job_is_reported(seed_vm):
    job = seed_vm.drive_mirror(device="node-D", target="e.qcow2", sync="full", format="qcow2", speed=64 << 10)
    os.kill(seed_vm.pid, signal.SIGKILL)
    with pytest.raises(qb.QEMUGone, match=r"no longer running.*signal 9"):
        job.wait(timeout=60)
    with pytest.raises(qb.QEMUGone, match="launch a new one"):
        seed_vm.query_block_jobs()


def test_connect_attaches_to_a_qemu_started_elsewhere(lab):
    lab.create("a.qcow2", size="16M")
    lab.write("a.qcow2", 0, "1M", pattern=0x11)
    socket = lab.path / "external.sock"
    args = command_line(lab.file("a.qcow2"), "node-A", "qcow2", socket, None, None)
    process = subprocess.Popen(args, cwd=lab.path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline_vm = qb.connect(socket)
        assert str(deadline_vm.chain()) == "[a.qcow2]"
        deadline_vm.blockdev_snapshot_sync(
            node_name="node-A", snapshot_file="b.qcow2", snapshot_node_name="node-B", format="qcow2"
        )
        assert str(deadline_vm.chain()) == "[a.qcow2] <-- [b.qcow2]"
        deadline_vm.flush()
        assert lab.read_matches("b.qcow2", 0, "1M", 0x11)
        process.kill()
        process.wait()
        with pytest.raises(qb.QEMUGone):
            deadline_vm.query_status()
    finally:
        process.kill()
        process.wait()


def test_connect_to_a_missing_socket_says_how(tmp_path):
    with pytest.raises(qb.InputError, match="server=on,wait=off"):
        qb.connect(tmp_path / "nothing.sock", timeout=0.5)


def test_lab_close_ends_every_qemu(tmp_path):
    lab = qb.Lab(tmp_path / "lab")
    machines = []
    for number in range(2):
        lab.create(f"disk{number}.qcow2", size="16M")
        machines.append(lab.launch(f"disk{number}.qcow2"))
    pids = [vm.pid for vm in machines]
    lab.close()
    for pid in pids:
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "zombie" in status.read_text().lower()


def test_a_qemu_that_cannot_start_is_explained(lab):
    lab.create("a.qcow2", size="16M")
    with pytest.raises(qb.QEMUGone, match="no longer running"):
        lab.launch("a.qcow2", accel="no-such-accelerator")


def test_missing_image_and_missing_size_are_explained(lab):
    with pytest.raises(qb.InputError, match="does not exist"):
        lab.launch("missing.qcow2")
    with pytest.raises(qb.InputError, match="needs a size"):
        lab.create("x.qcow2")
    with pytest.raises(qb.InputError, match="not understood"):
        lab.create("x.qcow2", size="lots")


def test_a_python_that_dies_hard_takes_its_qemu_along(tmp_path):
    """A crashed kernel runs no atexit handlers; QEMU must still not outlive it."""
    script = (
        "import os, qblocknb as qb\n"
        f"lab = qb.Lab({str(tmp_path / 'lab')!r})\n"
        "lab.create('a.qcow2', size='16M')\n"
        "print(lab.launch('a.qcow2').pid, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    pid = int(done.stdout.split()[0])
    status = Path(f"/proc/{pid}/status")
    for _ in range(500):
        if not status.exists() or "zombie" in status.read_text().lower():
            break
        time.sleep(0.01)
    assert not status.exists() or "zombie" in status.read_text().lower(), f"QEMU {pid} outlived its Python"


def test_a_closed_lab_refuses_to_launch(tmp_path):
    lab = qb.Lab(tmp_path / "lab")
    lab.create("a.qcow2", size="16M")
    lab.close()
    with pytest.raises(qb.InputError, match="closed lab"):
        lab.launch("a.qcow2")
    assert lab.machines == [], "nothing was started"
