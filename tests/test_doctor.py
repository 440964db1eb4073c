"""``qb.diagnose(vm)``: every entry of the catalogue made for real, found with its subject and severity, and
cleared by its fix with the data checked; a healthy VM gives nothing; a second QMP client sees the same; the CLI.

The pure checks (``qblocknb.model.examine``) also get recorded answers for what is hard to make on purpose.
"""

from __future__ import annotations

import itertools
import os
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
from qblocknb.live import faults
from qblocknb.live.faults import Fault
from qblocknb.model.doctor import Findings, Header, Observed
from qblocknb.model.examine import examine
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


# -- recorded answers, for what is hard to make on purpose --------------------------------------------------------
def test_a_missing_backing_format_and_a_header_naming_another_file():
    nameless = Header("/v/b.qcow2", "node-B", "node-B", "a.qcow2", None, "/v/a.qcow2", True, True, "/v/a.qcow2")
    other = Header("/v/c.qcow2", "node-C", "node-C", "old.qcow2", "qcow2", "/v/old.qcow2", True, False, "/v/b.qcow2")
    found = examine(Observed(headers=(nameless, other)))
    assert [(f.severity, f.kind, f.subject) for f in found] == [
        ("error", "image", "c.qcow2"),
        ("warning", "image", "b.qcow2"),
    ]
    assert "but QEMU has /v/b.qcow2 open below it" in found[0].problem
    assert found[0].fix.commands == (
        ("change-backing-file", {"device": "node-C", "image-node-name": "node-C", "backing-file": "/v/b.qcow2"}),
    )


def test_a_vm_paused_by_an_io_error_and_a_busy_bitmap_with_no_job():
    blocks = [{"device": "", "qdev": "/machine/peripheral/virtio0/virtio-backend", "io-status": "nospace"}]
    nodes = [{"node-name": "node-A", "dirty-bitmaps": [{"name": "bm0", "busy": True, "recording": True}]}]
    found = examine(Observed(status={"status": "io-error", "running": False}, blocks=blocks, nodes=nodes))
    assert [(f.severity, f.kind, f.subject, f.fix and str(f.fix)) for f in found] == [
        ("error", "vm", "QEMU", "cont"),
        ("warning", "bitmap", "bm0 on node-A", None),
    ]
    assert "/machine/peripheral/virtio0/virtio-backend" in found[0].problem
