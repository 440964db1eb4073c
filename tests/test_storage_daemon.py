"""qemu-storage-daemon: stream, commit and mirror on images no VM has open, the data read through its NBD export
while it runs and from the files once it has ended, and blockdev-create as a Job making the mirror's target."""

from __future__ import annotations

import pytest
from conftest import qemu_pids_under

import qblocknb as qb
from qblocknb.live.tools import run
from qblocknb.teaching.seedchain import LAYERS, MiB, expected_view

SEED = "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]"
WRITE = (4 * MiB, 64 << 10, 0xE5)  # a client's write through the export, past the seed's patterns


@pytest.fixture
def daemon(lab: qb.Lab) -> qb.StorageDaemon:
    """The seed's chain built offline (each layer's pattern written with qemu-io), a flat copy of what it reads
    as ``ref.raw``, and a storage daemon serving d.qcow2 as ``export0``."""
    below = None
    for layer in LAYERS:
        lab.create(layer.file, size="64M" if below is None else None, backing=below)
        lab.write(layer.file, layer.offset, layer.length, pattern=layer.pattern)
        below = layer.file
    run("qemu-img", "convert", "-O", "raw", str(lab.file("d.qcow2")), str(lab.file("ref.raw")), what="copying")
    vm = qb.StorageDaemon(lab, "d.qcow2")
    assert (vm.device, vm.disks) == ("export0", ["export0"])
    assert str(vm.chain()) == SEED
    assert [image.read_only for image in vm.chain()] == [True, True, True, False]
    assert vm.verify(expected_view("ABCD"))
    return vm


def end(lab: qb.Lab) -> None:
    """End the daemon as the lab does, and check that nothing of it still runs."""
    lab.close()
    assert qemu_pids_under(lab.path) == []


def drawn(vm: qb.Machine) -> str:
    return qb.render(vm.chain()).source


def test_stream_on_the_daemon(daemon, lab):
    job = daemon.block_stream(device="node-D", base_node="node-A", job_id="job0").wait(timeout=60)
    assert job.outcome == "completed"
    assert str(daemon.chain()) == "[a.qcow2] <-- [d.qcow2]"
    assert daemon.verify(expected_view("ABCD")), "read through export0 while the daemon runs"
    assert [(r.name, r.valid) for r in daemon.retired] == [("b.qcow2", True), ("c.qcow2", True)]
    assert "a.qcow2" in drawn(daemon) and "d.qcow2" in drawn(daemon)
    end(lab)
    assert str(lab.chain("d.qcow2")) == "[a.qcow2] <-- [d.qcow2]"
    assert lab.compare("d.qcow2", "ref.raw")
    assert lab.runs_match("d.qcow2", expected_view("ABCD"))
    assert lab.runs_match("c.qcow2", expected_view("ABC")), "a streamed-out image stays its point in time"


def test_commit_on_the_daemon(daemon, lab):
    daemon.block_commit(device="node-D", top_node="node-C", base_node="node-A", job_id="job0").wait(timeout=60)
    assert str(daemon.chain()) == "[a.qcow2] <-- [d.qcow2]"
    assert daemon.verify(expected_view("ABCD"))
    job = daemon.block_commit(device="node-D", job_id="job1").wait_ready(timeout=60)
    daemon.write(None, *WRITE)  # a client's write while the active commit is READY reaches the base too
    job.complete().wait(timeout=60)
    assert str(daemon.chain()) == "[a.qcow2]"
    assert daemon.disk()["inserted"]["node-name"] == "node-A", "the export follows the pivot, as a device does"
    assert daemon.verify([*expected_view("ABCD"), WRITE])
    assert {r.name: r.valid for r in daemon.retired} == {"b.qcow2": False, "c.qcow2": False, "d.qcow2": False}
    assert "a.qcow2" in drawn(daemon)
    end(lab)
    assert str(lab.chain("a.qcow2")) == "[a.qcow2]"
    assert lab.runs_match("a.qcow2", [*expected_view("ABCD"), WRITE])
    assert not lab.compare("a.qcow2", "ref.raw"), "the client's write is in a.qcow2 only"


def test_blockdev_create_makes_the_mirror_target(daemon, lab):
    target = str(lab.file("e.qcow2"))
    made = daemon.blockdev_create(job_id="mkfile", options={"driver": "file", "filename": target, "size": 0})
    assert isinstance(made, qb.Job) and made.target == target
    assert made.wait(timeout=30).outcome == "completed"
    daemon.blockdev_add(driver="file", node_name="file-node-E", filename=target)
    formatted = daemon.blockdev_create(
        job_id="mkqcow2", options={"driver": "qcow2", "file": "file-node-E", "size": 64 * MiB}
    )
    formatted.wait(timeout=30)
    assert list(formatted.events["status"])[:5] == ["created", "running", "waiting", "pending", "concluded"]
    daemon.blockdev_add(driver="qcow2", node_name="node-E", file="file-node-E")
    assert list(daemon.jobs["type"]) == ["create", "create"]

    job = daemon.blockdev_mirror(device="node-D", target="node-E", sync="full", job_id="job0").wait_ready(timeout=60)
    assert "e.qcow2" in drawn(daemon), "the target is drawn beside the chain while the mirror runs"
    daemon.write("export0", *WRITE)
    job.complete().wait(timeout=60)
    assert str(daemon.chain()) == "[e.qcow2]"
    assert daemon.verify([*expected_view("ABCD"), WRITE])
    assert "e.qcow2" in drawn(daemon)
    end(lab)
    assert str(lab.chain("e.qcow2")) == "[e.qcow2]"
    assert lab.runs_match("e.qcow2", [*expected_view("ABCD"), WRITE])
    assert lab.compare("d.qcow2", "e.qcow2"), "the source got the client's write too, until the pivot"


def test_a_failed_create_says_so(daemon, lab):
    target = str(lab.file("f.qcow2"))
    daemon.blockdev_create(job_id="mkfile", options={"driver": "file", "filename": target, "size": 0}).wait()
    daemon.blockdev_add(driver="file", node_name="file-node-F", filename=target)
    bad = daemon.blockdev_create(job_id="bad", options={"driver": "qcow2", "file": "file-node-F", "size": 12345})
    with pytest.raises(qb.JobError, match=r"blockdev-create.*failed.*check its options"):
        bad.wait(timeout=30)
    assert bad.outcome == "failed"
