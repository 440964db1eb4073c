"""``qb.diagnose(vm)``: every entry of the catalogue made for real, found with its subject and severity, and
cleared by its fix with the data checked; a healthy VM gives nothing; a second QMP client sees the same; the CLI.

The VM paused by an I/O error needs the tiny Linux guest (its own write must fail); it is skipped only where no
guest kernel is readable, and fails for that under CI.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import libvirt_env
import pytest
from foreign import ForeignQemu, libvirt_style

import qblocknb as qb
from qblocknb.live import faults, guestimage
from qblocknb.live.faults import ENOSPC, Fault
from qblocknb.model.doctor import Findings
from qblocknb.model.palette import ERROR
from qblocknb.render.doctorview import findings_html
from qblocknb.teaching.seedchain import expected_view

conn, domains = libvirt_env.conn, libvirt_env.domains  # the fixtures, where pytest looks for them
A, B, E = 0xA1, 0xB2, 0xE5
VIEW = [(0, "4M", A), ("4M", "1M", B)]


def two_layers(lab: qb.Lab, size: str = "64M", speedy: bool = True) -> qb.Machine:
    """``[a.qcow2] <-- [b.qcow2]`` live, A's data in a, B's written by the guest into b."""
    lab.create("a.qcow2", size=size)
    lab.write("a.qcow2", 0, "4M", pattern=A)
    vm = lab.launch("a.qcow2", node_name="node-A")
    vm.blockdev_snapshot_sync(node_name="node-A", snapshot_file="b.qcow2", snapshot_node_name="node-B", format="qcow2")
    vm.write(None, "4M", "1M", pattern=B)
    assert vm.verify(VIEW)
    return vm


def only(findings: Findings, kind: str, subject: str, severity: str):
    """The one finding, asserting it is the only one and has this kind, subject and severity."""
    assert [(f.kind, f.subject, f.severity) for f in findings] == [(kind, subject, severity)], str(findings)
    return findings[0]


def clear_streamed_base(vm: qb.Machine) -> None:
    """After a stream the base node (opened with -blockdev) is used by nobody: found, and deleted by its fix."""
    orphan = only(vm.diagnose(), "node", "node-A", "warning")
    assert str(orphan.fix) == "blockdev-del node-name=node-A"
    orphan.fix.run(vm)
    assert len(vm.diagnose()) == 0


def file_node(lab: qb.Lab, name: str) -> dict:
    return {"driver": "file", "filename": str(lab.file(name))}


def until(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def status_of(vm: qb.Machine, job_id: str) -> str | None:
    return next((job["status"] for job in vm.query("query-jobs") if job["id"] == job_id), None)


def test_a_healthy_vm_has_no_finding(seed_vm):
    findings = qb.diagnose(seed_vm)
    assert len(findings) == 0 and findings.summary == "nothing wrong found"
    assert list(findings.frame.columns) == ["severity", "kind", "subject", "problem", "why", "todo", "fix"]
    assert findings.frame.empty and "nothing wrong found" in findings_html(findings)
    assert seed_vm.diagnose().items == ()


def test_a_ready_job_is_found_and_its_fix_completes_it(lab):
    vm = two_layers(lab)
    job = vm.block_commit(device="node-B", job_id="job0")
    job.wait_ready(timeout=60)
    finding = only(vm.diagnose(), "job", "job0", "warning")
    assert "READY" in finding.problem and "cancel" in finding.todo
    assert str(finding.fix) == "block-job-complete device=job0"
    frame = vm.diagnose().frame
    assert frame.loc[0, "fix"] == "block-job-complete device=job0" and frame.loc[0, "kind"] == "job"
    html = findings_html(vm.diagnose())
    assert "block-job-complete" in html and "<svg" in html and 'id="job:job0"' in html
    assert f'stroke="{ERROR}"' in html  # the job's arrow, in the highlight colour
    finding.fix.run(vm)
    job.wait(timeout=60)
    assert "invalid" in only(vm.diagnose(), "image", "b.qcow2", "warning").problem  # the commit's top, on disk
    assert str(vm.chain()) == "[a.qcow2]" and vm.verify(VIEW)


def test_a_job_waiting_for_finalize_then_dismiss_names_the_id_it_holds(lab):
    vm = two_layers(lab)
    vm.block_stream(device="node-B", job_id="job0", auto_finalize=False, auto_dismiss=False)
    assert until(lambda: status_of(vm, "job0") == "pending")
    pending = only(vm.diagnose(), "job", "job0", "warning")
    assert "job-finalize" in pending.problem and "Job 'job0' already exists" in pending.why
    pending.fix.run(vm)
    assert until(lambda: status_of(vm, "job0") == "concluded")
    concluded = only(vm.diagnose(), "job", "job0", "warning")
    assert "job-dismiss" in concluded.problem and str(concluded.fix) == "job-dismiss id=job0"
    concluded.fix.run(vm)
    assert status_of(vm, "job0") is None
    clear_streamed_base(vm)
    assert str(vm.chain()) == "[b.qcow2]" and vm.verify(VIEW)


def test_a_job_paused_by_an_io_error_then_its_orphan_target(lab):
    vm = two_layers(lab)
    faults.add_target(vm, "e.qcow2", "node-E", Fault("write", once=True), size="64M")
    job = vm.blockdev_backup(device="node-B", target="node-E", sync="full", job_id="job0", on_target_error="stop")
    assert until(lambda: vm.query("query-block-jobs")[0].get("io-status") == "failed")
    finding = only(vm.diagnose(), "job", "job0", "error")
    assert "I/O error" in finding.problem and "dmesg" in finding.todo
    assert str(finding.fix) == "block-job-resume device=job0"
    finding.fix.run(vm)
    job.wait(timeout=60)
    orphan = only(vm.diagnose(), "node", "node-E", "warning")  # the backup's target, left open
    assert "blockdev-del" in orphan.why and str(orphan.fix) == "blockdev-del node-name=node-E"
    orphan.fix.run(vm)
    assert len(vm.diagnose()) == 0 and "node-E" not in {n["node-name"] for n in vm.query("query-named-block-nodes")}
    assert vm.verify(VIEW, image="e.qcow2") and vm.verify(VIEW)


def test_a_job_paused_by_someone_is_resumed_by_its_fix(lab):
    vm = two_layers(lab)
    job = vm.block_stream(device="node-B", job_id="job0", speed=1 << 20)  # slow enough to be paused midway
    vm.block_job_pause(device="job0")
    assert until(lambda: status_of(vm, "job0") == "paused")
    finding = only(vm.diagnose(), "job", "job0", "warning")
    assert "job0 (stream) is paused at" in finding.problem and "copies nothing" in finding.why
    assert str(finding.fix) == "block-job-resume device=job0"
    finding.fix.run(vm)
    assert until(lambda: status_of(vm, "job0") in ("running", None))
    vm.block_job_set_speed(device="job0", speed=0)
    job.wait(timeout=60)
    clear_streamed_base(vm)
    assert str(vm.chain()) == "[b.qcow2]" and vm.verify(VIEW)


def test_a_throttled_job_gets_its_time_and_the_speed_that_finishes_it(lab):
    vm = two_layers(lab)
    job = vm.block_stream(device="node-B", job_id="job0", speed=4096)
    finding = only(vm.diagnose(), "job", "job0", "warning")
    assert "throttled to 4 KiB/s" in finding.problem and "hours" in finding.problem
    command, arguments = finding.fix.commands[0]
    assert command == "block-job-set-speed" and arguments["speed"] >= (60 << 20) // 600
    finding.fix.run(vm)
    job.wait(timeout=120)
    clear_streamed_base(vm)
    assert str(vm.chain()) == "[b.qcow2]" and vm.verify(VIEW)


def test_a_mirror_that_cannot_converge(lab):
    vm = two_layers(lab)
    job = vm.drive_mirror(
        device="node-B", target="e.qcow2", sync="top", format="qcow2", job_id="job0", speed="1M", buf_size="64k"
    )
    stop, written = threading.Event(), set()

    def guest() -> None:  # a new MiB every 0.1 s: ten times what the mirror may copy
        for offset in itertools.cycle(range(8 << 20, 64 << 20, 1 << 20)):
            if stop.wait(0.1):
                return
            vm.write(None, offset, "1M", pattern=E)
            written.add(offset)

    writer = threading.Thread(target=guest, daemon=True)
    writer.start()
    try:
        assert until(lambda: len(written) >= 2)
        found = [f for f in vm.diagnose(sample=1.0) if "cannot converge" in f.problem]
    finally:
        stop.set()
        writer.join(30)
    assert [(f.kind, f.subject, f.severity) for f in found] == [("job", "job0", "warning")], found
    assert found[0].fix.commands[0][0] == "block-job-set-speed"
    found[0].fix.run(vm)
    job.wait_ready(timeout=120)
    job.cancel()
    job.wait(timeout=60)
    assert len(vm.diagnose()) == 0
    assert vm.verify([*VIEW, *((offset, "1M", E) for offset in sorted(written))])
    assert vm.verify([("4M", "1M", B), *((offset, "1M", E) for offset in sorted(written))], image="e.qcow2")


def test_a_writable_nbd_export_is_an_error_and_nbd_server_stop_ends_it(lab):
    vm = two_layers(lab)
    lab.create("e.qcow2", size="64M")
    vm.blockdev_add(driver="qcow2", node_name="node-E", file=file_node(lab, "e.qcow2"))
    vm.nbd_server_start(addr={"type": "unix", "data": {"path": str(lab.file("nbd.sock"))}})
    vm.block_export_add(type="nbd", id="exp0", node_name="node-E", writable=True)
    finding = only(vm.diagnose(), "node", "node-E", "error")
    assert "'exp0', writable" in finding.problem and str(finding.fix) == "nbd-server-stop"
    finding.fix.run(vm)
    assert until(lambda: not vm.query("query-block-exports"))
    only(vm.diagnose(), "node", "node-E", "warning").fix.run(vm)  # the exported node, now used by nobody
    assert len(vm.diagnose()) == 0 and vm.verify(VIEW)
    vm.nbd_server_start(addr={"type": "unix", "data": {"path": str(lab.file("nbd.sock"))}})
    vm.block_export_add(type="nbd", id="exp1", node_name="node-B")
    assert "read-only" in only(vm.diagnose(), "node", "node-B", "warning").problem


def test_incoming_then_postmigrate_and_cont_on_an_incoming_qemu_warns(lab):
    lab.create("a.qcow2", size="64M")
    lab.write("a.qcow2", 0, "4M", pattern=A)
    source = lab.launch("a.qcow2", node_name="node-A", name="source")
    source.blockdev_snapshot_sync(
        node_name="node-A", snapshot_file="b.qcow2", snapshot_node_name="node-B", format="qcow2"
    )
    source.write(None, "4M", "1M", pattern=B)
    destination = qb.launch_destination(lab, source)
    waiting = only(destination.diagnose(), "vm", "QEMU", "warning")
    assert "incoming migration" in waiting.problem and waiting.fix is None
    with pytest.warns(UserWarning, match="waits for an incoming migration.*run migrate on the source"):
        destination.cont()
    with pytest.warns(UserWarning, match="incoming migration"):
        destination.shell("cont")
    assert destination.query("query-status")["status"] == "inmigrate"  # QEMU said yes and runs nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the migration's own cont, after migrate, is not warned of
        qb.migrate_storage(source, destination)
    assert destination.query("query-status")["running"] and len(destination.diagnose()) == 0
    assert destination.verify(VIEW)
    left = only(source.diagnose(), "vm", "QEMU", "warning")
    assert "migrated away" in left.problem


def test_bitmaps_below_the_active_layer_disabled_and_inconsistent(lab):
    lab.create("a.qcow2", size="64M")
    lab.write("a.qcow2", 0, "4M", pattern=A)
    vm = lab.launch("a.qcow2", node_name="node-A")
    vm.block_dirty_bitmap_add(node="node-A", name="bm0", persistent=True)
    vm.blockdev_snapshot_sync(node_name="node-A", snapshot_file="b.qcow2", snapshot_node_name="node-B", format="qcow2")
    vm.write(None, "4M", "1M", pattern=B)
    stranded = only(vm.diagnose(), "bitmap", "bm0 on node-A", "warning")
    assert "below the active layer node-B" in stranded.problem and "incremental" in stranded.why
    stranded.fix.run(vm)
    assert len(vm.diagnose()) == 0
    assert {b.name for b in vm.chain().active.bitmaps} == {"bm0"}

    vm.block_dirty_bitmap_add(node="node-B", name="bm1", disabled=True)
    disabled = only(vm.diagnose(), "bitmap", "bm1 on node-B", "warning")
    disabled.fix.run(vm)
    assert len(vm.diagnose()) == 0 and vm.verify(VIEW)


def test_an_inconsistent_bitmap_after_qemu_was_killed(lab):
    lab.create("a.qcow2", size="64M")
    subprocess.run(["qemu-img", "bitmap", "--add", str(lab.file("a.qcow2")), "bm0"], check=True)
    first = lab.launch("a.qcow2", node_name="node-A", name="first")  # marks the bitmap in use in the file
    os.kill(first.pid, signal.SIGKILL)
    assert until(lambda: not first.process.alive())
    vm = lab.launch("a.qcow2", node_name="node-A", name="second")
    finding = only(vm.diagnose(), "bitmap", "bm0 on node-A", "error")
    assert "inconsistent" in finding.problem and "full backup" in finding.todo
    finding.fix.run(vm)
    assert len(vm.diagnose()) == 0


def test_a_bitmap_an_nbd_export_publishes_is_busy_with_no_job(lab):
    """``block-export-add bitmaps=[...]`` marks the bitmap busy for as long as the export lives, with no job: every
    bitmap command is refused. The export is what holds it, so its fix (stopping the server) frees it."""
    vm = two_layers(lab)
    vm.block_dirty_bitmap_add(node="node-B", name="bm0", disabled=True)  # QEMU exports only a bitmap not recording
    vm.nbd_server_start(addr={"type": "unix", "data": {"path": str(lab.file("nbd.sock"))}})
    vm.block_export_add(type="nbd", id="exp0", node_name="node-B", bitmaps=["bm0"])
    assert not vm.query("query-jobs")
    with pytest.raises(qb.Error, match="in use"):
        vm.block_dirty_bitmap_enable(node="node-B", name="bm0")
    findings = vm.diagnose()
    assert [(f.kind, f.subject, f.severity) for f in findings] == [
        ("node", "node-B", "warning"),  # the export itself, read-only
        ("bitmap", "bm0 on node-B", "warning"),
    ], str(findings)
    busy = findings.about("bitmap", "bm0 on node-B")[0]
    assert "busy with no job running" in busy.problem and "NBD export 'exp0'" in busy.problem
    assert str(busy.fix) == "nbd-server-stop"
    busy.fix.run(vm)
    assert until(lambda: not vm.query("query-block-exports"))
    disabled = only(vm.diagnose(), "bitmap", "bm0 on node-B", "warning")  # free again, and still disabled
    assert "disabled" in disabled.problem
    disabled.fix.run(vm)
    assert len(vm.diagnose()) == 0
    vm.write(None, "8M", "1M", pattern=E)
    bitmap = next(b for b in vm.chain().active.bitmaps if b.name == "bm0")
    assert bitmap.dirty_bytes == 1 << 20  # it records the guest's writes again
    assert vm.verify([*VIEW, ("8M", "1M", E)])


def test_a_header_whose_backing_name_does_not_resolve(lab):
    lab.create("a.qcow2", size="64M")
    lab.write("a.qcow2", 0, "4M", pattern=A)
    overlay = lab.file("b.qcow2")
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "gone.qcow2", "-F", "qcow2", str(overlay), "64M"],
        check=True,
    )
    vm = lab.launch("a.qcow2", node_name="node-A")
    faults.add_overlay(vm, "b.qcow2", "node-B")  # QEMU reads b over a; its header says gone.qcow2
    vm.write(None, "4M", "1M", pattern=B)
    finding = only(vm.diagnose(), "image", "b.qcow2", "error")
    assert "'gone.qcow2', which does not resolve" in finding.problem and "restart" in finding.why
    assert finding.fix.commands[0][0] == "change-backing-file"
    finding.fix.run(vm)
    assert len(vm.diagnose()) == 0
    vm.flush()
    assert str(lab.chain("b.qcow2")) == "[a.qcow2] <-- [b.qcow2]" and lab.runs_match("b.qcow2", VIEW)


def test_a_header_without_a_backing_format(lab):
    """qemu-img 7.2 refuses a backing file without its format (``create -b``, ``rebase -u``, ``amend``, ``convert
    -B`` all say so), but QEMU's own ``blockdev-create`` writes none when ``backing-fmt`` is left out."""
    lab.create("a.qcow2", size="64M")
    lab.write("a.qcow2", 0, "4M", pattern=A)
    vm = lab.launch("a.qcow2", node_name="node-A")
    lab.file("b.qcow2").touch()
    vm.blockdev_add(driver="file", node_name="b-file", filename=str(lab.file("b.qcow2")))
    options = {"driver": "qcow2", "file": "b-file", "size": 64 << 20, "backing-file": "a.qcow2"}
    vm.blockdev_create(job_id="create0", options=options).wait(timeout=60)
    vm.job_dismiss(id="create0")
    vm.blockdev_del(node_name="b-file")
    assert header_of(lab, "b.qcow2").get("backing-filename-format") is None
    faults.add_overlay(vm, "b.qcow2", "node-B")
    vm.write(None, "4M", "1M", pattern=B)
    finding = only(vm.diagnose(), "image", "b.qcow2", "warning")
    assert "'a.qcow2' without its format" in finding.problem and "raw" in finding.why
    assert str(finding.fix) == "change-backing-file device=node-B image-node-name=node-B backing-file=a.qcow2"
    finding.fix.run(vm)
    assert len(vm.diagnose()) == 0
    vm.flush()
    header = header_of(lab, "b.qcow2")
    assert (header["backing-filename"], header["backing-filename-format"]) == ("a.qcow2", "qcow2")
    assert str(lab.chain("b.qcow2")) == "[a.qcow2] <-- [b.qcow2]" and lab.runs_match("b.qcow2", VIEW)
    assert guest_reads(vm, VIEW)


def test_a_header_naming_another_file_than_qemu_has_open(lab):
    """The base was copied (to other storage, say) and QEMU opened the copy under the overlay, whose header still
    names the original; the original then changes: a restart, or qemu-img, would read it under the guest's data."""
    lab.create("a.qcow2", size="64M")
    lab.write("a.qcow2", 0, "4M", pattern=A)
    shutil.copyfile(lab.file("a.qcow2"), lab.file("copy.qcow2"))
    lab.create("b.qcow2", backing="a.qcow2")
    vm = lab.launch("copy.qcow2", node_name="node-A")
    faults.add_overlay(vm, "b.qcow2", "node-B")  # QEMU reads b over copy; its header says a.qcow2
    vm.write(None, "4M", "1M", pattern=B)
    lab.write("a.qcow2", 0, "4M", pattern=E)  # the original is reused: nothing of QEMU's has it open
    assert str(vm.chain()) == "[copy.qcow2] <-- [b.qcow2]" and guest_reads(vm, VIEW)
    assert not lab.runs_match("b.qcow2", VIEW)  # on disk, b reads over a.qcow2's E
    finding = only(vm.diagnose(), "image", "b.qcow2", "error")
    assert f"but QEMU has {lab.file('copy.qcow2')} open below it" in finding.problem
    assert finding.fix.commands == (
        (
            "change-backing-file",
            {"device": "node-B", "image-node-name": "node-B", "backing-file": str(lab.file("copy.qcow2"))},
        ),
    )
    finding.fix.run(vm)
    assert len(vm.diagnose()) == 0
    vm.flush()
    assert str(lab.chain("b.qcow2")) == "[copy.qcow2] <-- [b.qcow2]" and lab.runs_match("b.qcow2", VIEW)
    assert guest_reads(vm, VIEW)


def guest_reads(vm: qb.Machine, runs: list) -> bool:
    """Each run read through the guest's device inside QEMU. ``vm.verify`` reads the active layer's file instead,
    which it cannot find while QEMU names that node with a ``json:`` description (as it does for an image whose
    backing file is not the one, or not in the format, its header names)."""
    return all(vm.read_matches(None, offset, length, pattern) for offset, length, pattern in runs)


def header_of(lab: qb.Lab, name: str) -> dict:
    """``qemu-img info -U`` of the image alone (its header), not of its chain."""
    done = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(lab.file(name))], check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout)


def test_an_invalid_retired_image_still_on_disk(seed_vm, lab):
    seed_vm.block_commit(device="node-D", top_node="node-C", base_node="node-B", job_id="job0").wait(timeout=60)
    finding = only(seed_vm.diagnose(), "image", "c.qcow2", "warning")
    assert "this connection saw it leave" in finding.problem and finding.fix is None
    lab.file("c.qcow2").unlink()
    assert len(seed_vm.diagnose()) == 0 and seed_vm.verify(expected_view("ABCD"))


def test_a_deep_chain_is_flattened_by_its_plan(lab):
    names = [f"l{n}.qcow2" for n in range(10)]
    lab.create(names[0], size="16M")
    for number, (below, name) in enumerate(itertools.pairwise(names), 1):
        lab.create(name, backing=below)
        lab.write(name, number << 20, "64k", pattern=number)
    vm = lab.launch(names[-1], node_name="top")
    finding = only(vm.diagnose(), "disk", "virtio0", "warning")
    assert (
        "10 images deep" in finding.problem and str(finding.fix) == 'qb.plan(vm, "[l0.qcow2] <-- [l9.qcow2]").run(vm)'
    )
    finding.fix.run(vm)
    assert str(vm.chain()) == "[l0.qcow2] <-- [l9.qcow2]" and len(vm.diagnose()) == 0
    assert vm.verify([(n << 20, "64k", n) for n in range(1, 10)])


def test_another_qmp_client_s_jobs_are_found_the_same_way(lab, tmp_path: Path):
    lab.create("a.qcow2", size="64M")
    lab.write("a.qcow2", 0, "4M", pattern=A)
    second = tmp_path / "second.sock"
    qemu = ForeignQemu(tmp_path, [*libvirt_style(lab.file("a.qcow2")), "-qmp", f"unix:{second},server=on,wait=off"])
    owner = doctor = None
    try:
        owner = qb.connect(qemu.socket)
        doctor = qb.connect(second)
        owner.blockdev_snapshot_sync(
            node_name="libvirt-1-format", snapshot_file=str(lab.file("b.qcow2")), snapshot_node_name="snap-b"
        )
        owner.write(None, "4M", "1M", pattern=B)
        owner.block_commit(device="snap-b", job_id="commit0").wait_ready(timeout=60)
        seen_by_owner = owner.diagnose()
        finding = only(doctor.diagnose(), "job", "commit0", "warning")
        assert [(f.kind, f.subject, f.severity, f.problem) for f in seen_by_owner] == [
            ("job", "commit0", "warning", finding.problem)
        ]
        finding.fix.run(doctor)  # completed by the client that did not start it
        assert until(lambda: not doctor.query("query-jobs"))
        assert len(doctor.diagnose()) == 0 and len(owner.diagnose()) == 0
        assert str(doctor.chain()) == "[a.qcow2]" and doctor.verify(VIEW)
    finally:
        for vm in (owner, doctor):
            if vm is not None:
                vm.session.close()
        qemu.end()


def test_libvirt_xml_left_stale_by_a_passthrough_snapshot(lab, domains):
    lab.create("a.qcow2", size="64M")
    lab.write("a.qcow2", 0, "4M", pattern=A)
    name = domains.start(lab.file("a.qcow2")).name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the passthrough's taint warning
        vm = qb.connect_libvirt(name, libvirt_env.URI, passthrough=True)
    try:
        assert len(vm.diagnose()) == 0, str(vm.diagnose())
        vm.blockdev_snapshot_sync(
            node_name=vm.chain().active.node_name, snapshot_file=str(lab.file("b.qcow2")), snapshot_node_name="snap-b"
        )
        vm.write(None, "4M", "1M", pattern=B)
        finding = only(vm.diagnose(), "disk", "vda", "error")
        assert "a restart boots a.qcow2, not b.qcow2" in finding.why
        assert str(finding.fix) == 'qb.plan(vm, "[a.qcow2]").run(vm)'
        finding.fix.run(vm)
        only(vm.diagnose(), "image", "b.qcow2", "warning")  # what is left: the commit's top, invalid, on disk
        assert libvirt_env.xml_chain(name) == [str(lab.file("a.qcow2"))] and str(vm.chain()) == "[a.qcow2]"
        assert vm.verify(VIEW)
    finally:
        vm.session.close()


def test_the_cli_exit_codes(lab):
    vm = two_layers(lab)
    socket = vm.session.socket_path
    vm.session.close()  # QEMU's monitor takes one client at a time
    healthy = run_cli("doctor", str(socket))
    assert healthy.returncode == 0 and healthy.stdout.startswith("nothing wrong found"), healthy.stderr
    other = qb.connect(socket)
    lab.create("e.qcow2", size="64M")
    other.blockdev_add(driver="qcow2", node_name="node-E", file=file_node(lab, "e.qcow2"))
    other.nbd_server_start(addr={"type": "unix", "data": {"path": str(lab.file("nbd.sock"))}})
    other.block_export_add(type="nbd", id="exp0", node_name="node-E", writable=True)
    other.session.close()
    sick = run_cli("doctor", str(socket))
    assert sick.returncode == 1 and "ERROR    node node-E" in sick.stdout and "fix: nbd-server-stop" in sick.stdout
    bad = run_cli("doctor", str(lab.file("nope.sock")))
    assert bad.returncode == 2 and bad.stderr.startswith("qblocknb: cannot connect") and "Traceback" not in bad.stderr
    both = run_cli("doctor", str(socket), "--libvirt", "dom")
    assert both.returncode == 2 and "not both" in both.stderr


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qblocknb.cli", *args], capture_output=True, text=True, timeout=120)


def test_a_vm_paused_by_an_io_error_runs_again_after_cont(lab):
    """Notebook 11's recipe: the tiny Linux writes a MiB onto a layer whose first data write fails with ENOSPC, and
    virtio-blk's default ``werror=enospc`` stops the VM; the fault fired once, so ``cont`` retries the write."""
    guest_kernel_or_skip()
    lab.create("a.qcow2", size="64M")
    lab.write("a.qcow2", 0, "4M", pattern=A)
    vm = lab.launch("a.qcow2", node_name="node-A", guest=True)
    lab.create("b.qcow2", backing="a.qcow2")
    faults.add_overlay(vm, "b.qcow2", "node-B", Fault("write", errno=ENOSPC, once=True))
    vm.guest.shell(
        f"head -c 1048576 /dev/zero | tr '\\0' '\\{E:o}' | dd of=/dev/vda bs=1M seek=4 conv=fsync 2>/dev/null &"
    )
    assert until(lambda: vm.query("query-status")["status"] == "io-error")
    assert [b["io-status"] for b in vm.query("query-block")] == ["nospace"]
    disk = vm.query("query-block")[0]
    finding = only(vm.diagnose(), "vm", "QEMU", "error")
    assert f"a guest request on {disk['device'] or disk['qdev']} met an I/O error" in finding.problem
    assert str(finding.fix) == "cont"
    finding.fix.run(vm)
    vm.guest.shell("wait")  # the guest's dd, retried by QEMU, has finished
    status = vm.query("query-status")
    assert (status["status"], status["running"]) == ("running", True) and len(vm.diagnose()) == 0
    written = [(0, "4M", A), ("4M", "1M", E)]
    assert guest_reads(vm, written) and vm.verify(written, image="b.qcow2")  # the guest's write landed in b.qcow2
    assert vm.guest.shell("dd if=/dev/vda bs=1M skip=4 count=1 2>/dev/null | tr -d '\\345' | wc -c") == "0"


def guest_kernel_or_skip() -> None:
    """Skip where no guest kernel is readable (Ubuntu's /boot is root's); under CI that is a failure."""
    try:
        guestimage.boot_files()
    except guestimage.GuestImageError as error:
        if os.environ.get("CI"):
            pytest.fail(f"no guest kernel, and CI is set: {error}", pytrace=False)
        pytest.skip(f"no guest OS here: {error}")
