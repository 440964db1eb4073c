"""Every live block job with a real guest OS writing and checking its own data while the job runs.

The tiny guest (``lab.launch(..., guest=True)``, see ``qblocknb.live.guest``) writes numbered records over a 2 MiB
region of its disk at 8 MiB, while the seed's layer patterns sit in MiB 0-3 (written through the device, as in
``qblocknb.seedchain``). qb.Jobs are throttled with ``speed=`` so that the guest writes during each of them. After
each job the writer is stopped and the guest reads every record back; the chain's shape, ``qemu-img check`` of
every image involved, the layer patterns, and for copies (backup, a mirror cancelled after READY, images that left
the chain) the records they hold at their point in time are checked too.

Boots are TCG here (PVM's /dev/kvm cannot run the guest kernel) and take 5-7 s, so each family of scenarios
shares one guest: the tests of a family run in file order on one chain, and each first checks the chain it
starts from. The file system case mirrors a mounted ext2 with pivot and boots a second guest on the new image.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import qblocknb as qb
from qblocknb.live import guestimage
from qblocknb.live.guest import WriterReport
from qblocknb.teaching import seedchain, tutorial
from qblocknb.widgets.jobmonitor import JobMonitor

MiB = 1 << 20
RECORD = 64 << 10
WRITER = {"size": "2M", "record": "64k", "offset": "8M", "rate": 20}  # 1.25 MiB/s, 32 records
SEED = "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]"
LAYERS = (
    ("node-B", "b.qcow2", 1 * MiB, 0xB2),
    ("node-C", "c.qcow2", 2 * MiB, 0xC3),
    ("node-D", "d.qcow2", 3 * MiB, 0xD4),
)


# -- helpers -------------------------------------------------------------------------------------------------------
def launch_guest(lab: qb.Lab, image: str, node_name: str) -> qb.Machine:
    vm = lab.launch(image, node_name=node_name, guest=True)
    print(f"\n{image}: guest booted in {vm.guest.boot_seconds:.1f} s")
    return vm


def base_image(lab: qb.Lab, name: str = "a.qcow2") -> None:
    """The seed's A: 64 MiB, its first 4 MiB 0xA1."""
    lab.create(name, size="64M")
    lab.write(name, 0, "4M", pattern=0xA1)


def wall(job: qb.Job, event: str, status: str | None = None) -> float:
    """QEMU's timestamp (seconds since the epoch, this host's clock) of the job's first such event."""
    events = job.events
    rows = events[(events.event == event) & ((events.status == status) if status else True)]
    return rows["time"].iloc[0].timestamp()


def writes_during(vm: qb.Machine, job: qb.Job) -> int:
    """Records the guest finished between the job's creation and its end, as QEMU's events date them."""
    progress = vm.guest.writer_progress
    start, end = wall(job, "JOB_STATUS_CHANGE", "created"), wall(job, "JOB_STATUS_CHANGE", "concluded")
    return int(((progress.kind == "W") & progress.t.between(start, end)).sum())


def with_writer(vm: qb.Machine, run: Callable[[], qb.Job], offset: str = "8M") -> tuple[qb.Job, WriterReport]:
    """Start the guest's writer, run a job to its end under it, stop the writer: the report must be clean.

    A copy checked against the writer's points in time needs a region no earlier writer wrote (``offset``):
    rounds count from 0 again at each start, so an earlier round 5 cannot be told from this one's.
    """
    vm.guest.start_writer(**{**WRITER, "offset": offset})
    time.sleep(0.5)  # the writer is under way before the job starts
    job = run()
    during = writes_during(vm, job)
    report = vm.guest.stop_writer()
    duration = wall(job, "JOB_STATUS_CHANGE", "concluded") - wall(job, "JOB_STATUS_CHANGE", "created")
    print(f"{job.id} ({job.command}) {duration:.1f} s, {during} guest records written meanwhile; {report}")
    assert report.ok, str(report)
    assert report.records_written > 0 and report.records_checked > 0
    assert during > 0, f"the guest wrote nothing during {job.id}: raise its throttle"
    return job, report


def raw_copy(lab: qb.Lab, image: str, raw: str) -> Path:
    """``qemu-img convert -U -O raw``: the image read through its own backing chain, as one raw file."""
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(lab.file(image)), str(lab.file(raw))], check=True)
    return lab.file(raw)


def assert_clean(lab: qb.Lab, vm: qb.Machine | None, *images: str) -> None:
    if vm is not None:
        vm.flush()  # QEMU's cached qcow2 metadata reaches the files
    for image in images:
        result = lab.check(image)
        assert result.get("check-errors", 0) == 0 and not result.get("corruptions"), f"{image}: {result}"


# -- block-stream: the seed's three cases on one chain built live ----------------------------------------------------
@pytest.fixture(scope="module")
def stream_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[qb.Lab]:
    with qb.Lab(tmp_path_factory.mktemp("live-stream") / "lab") as lab:
        yield lab


@pytest.fixture(scope="module")
def stream_vm(stream_lab: qb.Lab) -> qb.Machine:
    """The seed's chain, snapshot after snapshot while the guest writes; each image left below is its moment."""
    lab = stream_lab
    base_image(lab)
    vm = launch_guest(lab, "a.qcow2", "node-A")
    vm.guest.start_writer(**WRITER)
    moments = {}
    below = "node-A", "a.qcow2"
    for node, file, offset, pattern in LAYERS:
        time.sleep(0.8)
        before = time.time()
        vm.blockdev_snapshot_sync(node_name=below[0], snapshot_file=file, snapshot_node_name=node, format="qcow2")
        moments[below[1]] = (before, time.time())
        vm.write(vm.device, offset, MiB, pattern=pattern)
        below = node, file
    time.sleep(0.8)
    report = vm.guest.stop_writer()
    assert report.ok, str(report)
    assert str(vm.chain()) == SEED
    assert vm.verify(seedchain.expected_view("ABCD"))
    assert_clean(lab, vm, "a.qcow2", "b.qcow2", "c.qcow2", "d.qcow2")
    # Each image below the top holds the disk as it was when the next snapshot was taken: its records, one
    # allowed round each; the copies made now are what each must still read as after the streams.
    for image, (before, after) in moments.items():
        raw = raw_copy(lab, image, f"{image}.moment.raw")
        assert vm.guest.check_copy(raw, before, after) == [], f"{image} is not the disk at its snapshot"
    return vm


def test_stream_into_an_intermediate_overlay(stream_vm, stream_lab):
    """``block-stream device=node-C base-node=node-A``: B into C, the active layer untouched."""
    vm, lab = stream_vm, stream_lab
    assert str(vm.chain()) == SEED
    job, _ = with_writer(
        vm, lambda: vm.block_stream(device="node-C", base_node="node-A", job_id="stream-c", speed="1M").wait(60)
    )
    assert job.outcome == "completed"
    assert str(vm.chain()) == "[a.qcow2] <-- [c.qcow2] <-- [d.qcow2]"
    assert str(lab.chain("d.qcow2")) == "[a.qcow2] <-- [c.qcow2] <-- [d.qcow2]", "the files agree"
    assert vm.verify(seedchain.expected_view("ABCD"))
    assert_clean(lab, vm, "a.qcow2", "b.qcow2", "c.qcow2", "d.qcow2")
    # A stream leaves valid points in time: C (now holding B's data) and the retired B read as they did.
    assert tutorial.reads(lab, "c.qcow2", "ABC") and tutorial.reads(lab, "b.qcow2", "AB")
    for image in ("b.qcow2", "c.qcow2"):
        assert lab.compare(image, f"{image}.moment.raw").identical, f"{image} still reads as at its snapshot"


def test_stream_into_the_top_with_a_base(stream_vm, stream_lab):
    """``block-stream device=node-D base-node=node-A``: C into D, with the guest writing to D meanwhile."""
    vm, lab = stream_vm, stream_lab
    assert str(vm.chain()) == "[a.qcow2] <-- [c.qcow2] <-- [d.qcow2]"
    job, _ = with_writer(
        vm, lambda: vm.block_stream(device="node-D", base_node="node-A", job_id="stream-d", speed="1M").wait(60)
    )
    assert job.outcome == "completed"
    assert str(vm.chain()) == "[a.qcow2] <-- [d.qcow2]"
    assert str(lab.chain("d.qcow2")) == "[a.qcow2] <-- [d.qcow2]"
    assert vm.verify(seedchain.expected_view("ABCD"))
    assert_clean(lab, vm, "a.qcow2", "c.qcow2", "d.qcow2")
    assert lab.compare("c.qcow2", "c.qcow2.moment.raw").identical, "the streamed-out C is still its moment"


def test_stream_the_whole_chain_into_the_top(stream_vm, stream_lab):
    """``block-stream device=node-D``: everything into the active layer, which then stands alone."""
    vm, lab = stream_vm, stream_lab
    assert str(vm.chain()) == "[a.qcow2] <-- [d.qcow2]"
    job, _ = with_writer(vm, lambda: vm.block_stream(device="node-D", job_id="stream-all", speed="1M").wait(60))
    assert job.outcome == "completed"
    assert str(vm.chain()) == "[d.qcow2]"
    assert str(lab.chain("d.qcow2")) == "[d.qcow2]"
    assert vm.verify(seedchain.expected_view("ABCD"))
    assert_clean(lab, vm, "a.qcow2", "d.qcow2")
    assert tutorial.reads(lab, "a.qcow2", "A") and tutorial.reads(lab, "d.qcow2", "ABCD")
    assert lab.compare("a.qcow2", "a.qcow2.moment.raw").identical


# -- active block-commit: complete (pivot) and cancel after READY ---------------------------------------------------
@pytest.fixture(scope="module")
def commit_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[qb.Lab]:
    with qb.Lab(tmp_path_factory.mktemp("live-commit") / "lab") as lab:
        yield lab


@pytest.fixture(scope="module")
def commit_vm(commit_lab: qb.Lab) -> qb.Machine:
    base_image(commit_lab)
    return launch_guest(commit_lab, "a.qcow2", "node-A")


def snapshot_with_pattern(vm: qb.Machine, below: str, file: str, node: str, offset: int, pattern: int) -> None:
    vm.blockdev_snapshot_sync(node_name=below, snapshot_file=file, snapshot_node_name=node, format="qcow2")
    vm.write(vm.device, offset, MiB, pattern=pattern)


def active_commit(vm: qb.Machine, top: str, job_id: str, verb: str) -> qb.Job:
    """Commit the active layer into A; in READY the guest keeps writing a second, then ``verb`` ends it."""
    job = vm.block_commit(device=top, base_node="node-A", top_node=top, job_id=job_id, speed="4M")
    job.wait_ready(timeout=60)
    time.sleep(1.0)  # READY: every guest write now goes to both layers
    getattr(job, verb)()
    return job.wait(60)


def test_active_commit_then_complete_pivots_onto_the_base(commit_vm, commit_lab):
    vm, lab = commit_vm, commit_lab
    snapshot_with_pattern(vm, "node-A", "b.qcow2", "node-B", 1 * MiB, 0xB2)
    assert str(vm.chain()) == "[a.qcow2] <-- [b.qcow2]"
    job, _ = with_writer(vm, lambda: active_commit(vm, "node-B", "commit-complete", "complete"))
    assert job.outcome == "completed" and job.ready
    assert str(vm.chain()) == "[a.qcow2]"
    assert vm.chain().active.device == "virtio0"
    assert vm.verify(seedchain.expected_view("AB"))
    assert_clean(lab, vm, "a.qcow2", "b.qcow2")
    assert tutorial.reads(lab, "a.qcow2", "AB"), "A now holds B's data"


def test_active_commit_cancelled_after_ready_keeps_the_chain(commit_vm, commit_lab):
    vm, lab = commit_vm, commit_lab
    assert str(vm.chain()) == "[a.qcow2]"
    snapshot_with_pattern(vm, "node-A", "c.qcow2", "node-C", 2 * MiB, 0xC3)
    assert str(vm.chain()) == "[a.qcow2] <-- [c.qcow2]"
    job, _ = with_writer(vm, lambda: active_commit(vm, "node-C", "commit-cancel", "cancel"))
    assert job.outcome == "completed", "a cancel after READY is reported as BLOCK_JOB_COMPLETED"
    assert "BLOCK_JOB_CANCELLED" not in job.events.event.tolist()
    assert str(vm.chain()) == "[a.qcow2] <-- [c.qcow2]", "no pivot: the guest stays on C"
    assert vm.verify(seedchain.expected_view("ABC"))
    assert_clean(lab, vm, "a.qcow2", "c.qcow2")
    assert tutorial.reads(lab, "a.qcow2", "ABC"), "but A was already rewritten with C's data"


# -- mirror: complete (pivot) and cancel after READY; then a full backup's point in time ---------------------------
@pytest.fixture(scope="module")
def mirror_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[qb.Lab]:
    with qb.Lab(tmp_path_factory.mktemp("live-mirror") / "lab") as lab:
        yield lab


@pytest.fixture(scope="module")
def mirror_vm(mirror_lab: qb.Lab) -> qb.Machine:
    base_image(mirror_lab)
    vm = launch_guest(mirror_lab, "a.qcow2", "node-A")
    snapshot_with_pattern(vm, "node-A", "b.qcow2", "node-B", 1 * MiB, 0xB2)
    return vm


def test_mirror_then_complete_pivots_onto_the_target(mirror_vm, mirror_lab):
    vm, lab = mirror_vm, mirror_lab
    assert str(vm.chain()) == "[a.qcow2] <-- [b.qcow2]"

    def mirror() -> qb.Job:
        job = vm.drive_mirror(
            device="node-B",
            target="m.qcow2",
            format="qcow2",
            sync="full",
            node_name="node-M",
            job_id="mirror-pivot",
            speed="4M",
        )
        job.wait_ready(timeout=60)
        time.sleep(1.0)  # READY: guest writes are mirrored
        job.complete()
        return job.wait(60)

    job, _ = with_writer(vm, mirror)
    assert job.outcome == "completed"
    assert str(vm.chain()) == "[m.qcow2]"
    assert str(lab.chain("m.qcow2")) == "[m.qcow2]"
    assert vm.verify(seedchain.expected_view("AB"))
    assert_clean(lab, vm, "a.qcow2", "b.qcow2", "m.qcow2")
    assert tutorial.reads(lab, "b.qcow2", "AB"), "the old chain is left as it was at the pivot"


def test_mirror_cancelled_after_ready_is_a_copy_at_the_cancel(mirror_vm, mirror_lab):
    vm, lab = mirror_vm, mirror_lab
    assert str(vm.chain()) == "[m.qcow2]"
    cancel: dict[str, float] = {}

    def mirror() -> qb.Job:
        job = vm.drive_mirror(
            device="node-M", target="n.qcow2", format="qcow2", sync="full", job_id="mirror-cancel", speed="4M"
        )
        job.wait_ready(timeout=60)
        time.sleep(1.0)
        cancel["sent"] = time.time()
        job.cancel()
        return job.wait(60)

    job, _ = with_writer(vm, mirror, offset="12M")
    assert job.outcome == "completed", "a cancel after READY is reported as BLOCK_JOB_COMPLETED"
    assert str(vm.chain()) == "[m.qcow2]", "no pivot"
    assert_clean(lab, vm, "m.qcow2", "n.qcow2")
    # n.qcow2 is the guest's disk as it was between the cancel and the job's end: the patterns, and each record
    # one of the rounds written around that moment.
    assert tutorial.reads(lab, "n.qcow2", "AB")
    raw = raw_copy(lab, "n.qcow2", "n.raw")
    assert vm.guest.check_copy(raw, cancel["sent"], wall(job, "BLOCK_JOB_COMPLETED")) == []


def test_backup_holds_the_guest_disk_at_its_start(mirror_vm, mirror_lab):
    vm, lab = mirror_vm, mirror_lab
    assert str(vm.chain()) == "[m.qcow2]"
    lab.create("k.qcow2", size="64M")
    vm.blockdev_add(driver="qcow2", node_name="node-K", file={"driver": "file", "filename": str(lab.file("k.qcow2"))})

    def backup() -> qb.Job:
        return vm.blockdev_backup(device="node-M", target="node-K", sync="full", job_id="backup", speed="16M").wait(60)

    job, report = with_writer(vm, backup, offset="16M")
    assert job.outcome == "completed"
    assert str(vm.chain()) == "[m.qcow2]", "a backup's target stays outside the chain"
    assert_clean(lab, vm, "m.qcow2", "k.qcow2")
    assert str(lab.chain("k.qcow2")) == "[k.qcow2]"
    assert tutorial.reads(lab, "k.qcow2", "AB")
    # The backup is the disk at the job's start (copy-before-write), though the guest wrote throughout.
    raw = raw_copy(lab, "k.qcow2", "k.raw")
    start, running = wall(job, "JOB_STATUS_CHANGE", "created"), wall(job, "JOB_STATUS_CHANGE", "running")
    assert vm.guest.check_copy(raw, start, running) == []
    held = vm.guest.point_in_time(start, running)
    assert any(r is not None for rounds in held.values() for r in rounds), "the writer had written before the backup"
    # The live disk has moved on since: the backup and the guest's disk now differ.
    assert not vm.compare("k.qcow2").identical

    # The job monitor draws the guest's writes beside the job's progress (no browser needed).
    monitor = JobMonitor(job, plot_interval=3600, writer=vm.guest)
    plain = JobMonitor(job, plot=False)
    try:
        figure = monitor.figure()
        assert [axes.get_ylabel() for axes in figure.axes] == ["done (%)", "MiB/s", "guest MiB"]
        drawn = figure.axes[-1].get_lines()[0].get_ydata()
        assert drawn[-1] * MiB == report.records_written * RECORD, "the panel shows every record the guest wrote"
        assert "guest MiB" not in [axes.get_ylabel() for axes in plain.figure().axes]
        monitor.draw_plot()
        assert bytes(monitor.plot.value).startswith(b"\x89PNG") and monitor.plot.layout.display is None
    finally:
        monitor.close()
        plain.close()


# -- a file system: ext2, written while mirrored with pivot, then checked from a new guest --------------------------
FS_KIB = 48 * 1024  # ext2 over the first 48 MiB of the disk
MODULES_AT = 56  # MiB: the ext2 driver's modules, as a tar, where the file system does not reach


def module_tar() -> bytes:
    """The guest's initramfs has disk drivers only: the ext2 driver (ext4.ko) and what it needs, as a tar."""
    version, _ = guestimage.find_kernel()
    buffer = io.BytesIO()
    names = []
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for module in guestimage.module_order(version, ("crc32c_generic", "ext4")):
            data = guestimage.read_module(guestimage.MODULES / version / module)
            names.append(Path(module).name.split(".ko")[0] + ".ko")
            entry = tarfile.TarInfo(names[-1])
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
        order = ("\n".join(names) + "\n").encode()
        entry = tarfile.TarInfo("load-order")
        entry.size = len(order)
        tar.addfile(entry, io.BytesIO(order))
    return buffer.getvalue()


def load_ext2(vm: qb.Machine) -> None:
    vm.guest.shell(
        f"mkdir -p /tmp/mods && dd if=/dev/vda bs=1M skip={MODULES_AT} count=8 2>/dev/null | tar x -C /tmp/mods && "
        "for m in $(cat /tmp/mods/load-order); do insmod /tmp/mods/$m || exit 1; done; grep -w ext2 /proc/filesystems"
    )


def checksums(vm: qb.Machine) -> dict[str, str]:
    lines = vm.guest.shell("(cd /mnt && md5sum f* g* h*)", timeout=60).splitlines()
    return {name: digest for digest, name in (line.split() for line in lines)}


def test_ext2_mirrored_with_pivot_while_files_are_written_is_intact_on_a_new_guest(tmp_path: Path):
    with qb.Lab(tmp_path / "lab") as lab:
        raw = lab.file("fs.raw")
        with open(raw, "wb") as disk:
            disk.truncate(64 * MiB)
            disk.seek(MODULES_AT * MiB)
            disk.write(module_tar())
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(lab.file("fs.qcow2"))], check=True)
        vm = launch_guest(lab, "fs.qcow2", "node-F")
        load_ext2(vm)
        vm.guest.shell(f"mke2fs -q /dev/vda {FS_KIB} && mkdir -p /mnt && mount -t ext2 /dev/vda /mnt", timeout=60)
        vm.guest.shell(
            "for i in 1 2 3 4 5; do dd if=/dev/urandom of=/mnt/f$i bs=64k count=8 2>/dev/null || exit 1; done; sync",
            timeout=60,
        )
        # More files are written, each synced, while the mirror copies the disk and while it is READY.
        vm.guest.shell(
            "(i=0; while [ $i -lt 20 ]; do dd if=/dev/urandom of=/mnt/g$i bs=64k count=4 2>/dev/null; sync; "
            "usleep 100000; i=$((i + 1)); done; touch /tmp/files-done) >/dev/null 2>&1 &"
        )
        job = vm.drive_mirror(
            device="node-F",
            target="new.qcow2",
            format="qcow2",
            sync="full",
            node_name="node-N",
            job_id="fs-mirror",
            speed="8M",
        )
        job.wait_ready(timeout=60)
        written_meanwhile = vm.guest.shell("ls /mnt | grep -c ^g || true")
        vm.guest.shell("while [ ! -e /tmp/files-done ]; do usleep 100000; done", timeout=60)
        job.complete()
        job.wait(60)
        assert job.outcome == "completed"
        assert str(vm.chain()) == "[new.qcow2]"
        vm.guest.shell("dd if=/dev/urandom of=/mnt/h1 bs=64k count=4 2>/dev/null && sync")  # only on new.qcow2
        before = checksums(vm)
        print(f"{written_meanwhile} of 20 files written by READY; {len(before)} files in all")
        assert len(before) == 5 + 20 + 1
        vm.guest.shell("umount /mnt")
        vm.quit()

        for image in ("fs.qcow2", "new.qcow2"):
            assert lab.check(image)["check-errors"] == 0
        assert str(lab.chain("new.qcow2")) == "[new.qcow2]"
        # busybox has mke2fs but no e2fsck: the host's e2fsck (e2fsprogs) checks a raw copy, read-only (-n).
        fsck = subprocess.run(
            ["e2fsck", "-fn", str(raw_copy(lab, "new.qcow2", "new.raw"))], capture_output=True, text=True
        )
        summary = fsck.stdout.strip().splitlines()[-1]
        print(summary)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        assert f" {11 + len(before)}/" in summary, "inodes in use: 10 reserved, lost+found and the files"

        vm = launch_guest(lab, "new.qcow2", "node-N")
        load_ext2(vm)  # the modules came across with the mirror too
        vm.guest.shell("mkdir -p /mnt && mount -t ext2 -o ro /dev/vda /mnt")
        assert checksums(vm) == before
