"""qblocknb on a VM that libvirt manages through the opt-in monitor passthrough: a real libvirtd, a real QEMU.

What the passthrough does behind libvirt's back (a stale XML, a taint) is checked here; the default,
libvirt-native connection is in tests/test_libvirt_native.py.

Each test starts its own transient domain (no network, paused, one qcow2 disk in the test's lab) and
destroys it at the end.  ``tools/libvirt-setup.sh`` installs and starts what these tests need; without
libvirt-python or a reachable daemon they are skipped, except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
import uuid
import warnings
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from libvirt_env import unavailable

import qblocknb as qb
from qblocknb.live import attach
from qblocknb.qmp.libvirt import start_event_loop

URI = "qemu:///system"
DEVICE = "virtio-disk0"  # the <alias> libvirt gives the first virtio disk
QDEV = f"/machine/peripheral/{DEVICE}/virtio-backend"

try:
    import libvirt
except ImportError:
    libvirt = None


@pytest.fixture(scope="module")
def conn():
    if libvirt is None:
        unavailable("libvirt-python cannot be imported (pip install libvirt-python)")
    start_event_loop()  # before this process opens its first libvirt connection, or its calls stall
    try:
        connection = libvirt.open(URI)
    except libvirt.libvirtError as exc:
        unavailable(f"libvirtd is not reachable at {URI} ({exc.get_error_message()})")
    yield connection
    connection.close()


def domain_xml(name: str, image: Path, virt_type: str) -> str:
    # QEMU runs as root here (static DAC label, no relabelling): the lab folder is 0700 root, and libvirt
    # would otherwise run QEMU as libvirt-qemu, which can neither read it nor open a root-only /dev/kvm.
    return f"""
<domain type='{virt_type}'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{escape(str(image))}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <memballoon model='none'/>
  </devices>
</domain>"""


def virt_type() -> str:
    """kvm when /dev/kvm opens (QEMU runs as root here), else TCG; cheaper than libvirt's capabilities (7 s)."""
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError:
        return "qemu"
    return "kvm"


@pytest.fixture
def start_domain(conn):
    """Start transient, paused domains on lab images; each is destroyed at the end, leaving no QEMU behind."""
    started = []

    def start(image: Path) -> str:
        name = f"qblocknb-test-{uuid.uuid4().hex[:8]}"
        started.append(conn.createXML(domain_xml(name, image, virt_type()), libvirt.VIR_DOMAIN_START_PAUSED))
        return name

    yield start
    for dom in started:
        with contextlib.suppress(libvirt.libvirtError):  # already gone is fine
            dom.destroy()


def virsh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=30)


def domain_log(name: str) -> str:
    return Path(f"/var/log/libvirt/qemu/{name}.log").read_text(errors="replace")


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def guest_write(vm: qb.Machine, offset: str, length: str, pattern: int) -> None:
    """A guest write through the device; on a libvirt QEMU its verdict goes to the domain log, not the reply."""
    assert vm.hmp(f'qemu-io -d {QDEV} "write -P {pattern:#x} {offset} {length}"') == ""


def reads(path: Path, *runs: tuple[str, str, int]) -> bool:
    """``qemu-io -U -r`` reads of ``(offset, length, pattern)`` runs from a file QEMU holds open."""
    commands = [arg for offset, length, pattern in runs for arg in ("-c", f"read -P {pattern:#x} {offset} {length}")]
    done = subprocess.run(["qemu-io", "-U", "-r", *commands, str(path)], capture_output=True, text=True, check=True)
    return "Pattern verification failed" not in done.stdout and done.stdout.count("read ") == len(runs)


def domblklist(name: str) -> dict[str, str]:
    lines = virsh("domblklist", name).stdout.splitlines()[2:]
    return dict(line.split(None, 1) for line in lines if line.strip())


def test_stream_and_commit_through_the_passthrough(lab, start_domain):
    lab.create("a.qcow2", size="64M")
    lab.write("a.qcow2", 0, "1M", pattern=0xA1)
    name = start_domain(lab.file("a.qcow2"))
    vm = qb.connect_libvirt(name, URI, device=DEVICE, passthrough=True)
    try:
        assert f"libvirt domain '{name}' at {URI}" in repr(vm)
        assert vm.alive()
        chain = vm.chain()
        assert str(chain) == "[a.qcow2]"
        assert chain.active.node_name == "libvirt-1-format"  # libvirt's own node names

        # libvirt marks the domain on the first passthrough command (connecting sent one).
        assert wait_for(lambda: "is tainted: custom-monitor" in domain_log(name), what="the taint line")
        assert re.search(r"Messages:\s+tainted: custom monitor control commands issued", virsh("dominfo", name).stdout)

        vm.blockdev_snapshot_sync(
            node_name=chain.active.node_name,
            snapshot_file=str(lab.file("b.qcow2")),
            snapshot_node_name="snap-b",
            format="qcow2",
        )
        assert str(vm.chain()) == "[a.qcow2] <-- [b.qcow2]"
        # libvirt did not see the snapshot: its XML still has a.qcow2 as the disk, with no backing layer.
        assert domblklist(name) == {"vda": str(lab.file("a.qcow2"))}
        xml = virsh("dumpxml", name).stdout
        assert "b.qcow2" not in xml and "<backingStore/>" in xml

        guest_write(vm, "1M", "64k", 0xB2)
        assert wait_for(lambda: "wrote 65536/65536 bytes at offset 1048576" in domain_log(name), what="the write")

        job = vm.block_stream(device="snap-b", job_id="job0")
        job.wait(timeout=60)
        assert job.outcome == "completed"
        assert list(job.events["event"]).count("BLOCK_JOB_COMPLETED") == 1
        assert str(vm.chain()) == "[b.qcow2]"
        assert domblklist(name) == {"vda": str(lab.file("a.qcow2"))}, "libvirt still shows the file it started with"

        vm.hmp('qemu-io snap-b "flush"')
        assert reads(lab.file("b.qcow2"), ("0", "1M", 0xA1), ("1M", "64k", 0xB2))
        assert str(lab.chain("b.qcow2")) == "[b.qcow2]", "b.qcow2 holds everything and has no backing file"

        # A throttled active commit, watched from both sides while it runs.
        vm.blockdev_snapshot_sync(
            node_name="snap-b", snapshot_file=str(lab.file("c.qcow2")), snapshot_node_name="snap-c", format="qcow2"
        )
        guest_write(vm, "2M", "4M", 0xC3)
        job = vm.block_commit(device="snap-c", top_node="snap-c", base_node="snap-b", job_id="job1", speed="1M")
        infos = wait_for(lambda: vm.execute("query-block-jobs"), what="job1 in query-block-jobs")
        assert [(i["device"], i["type"], i["speed"]) for i in infos] == [("job1", "commit", 1 << 20)]
        assert 0 <= infos[0]["offset"] <= infos[0]["len"]
        assert job.status == "running" and not infos[0]["ready"]
        # libvirt has no record of a job it did not start.
        info = virsh("blockjob", name, "vda", "--info")
        assert info.returncode == 0 and info.stdout.strip() == "No current block job for vda"
        assert virsh("blockjob", name, "vda", "--info", "--raw").stdout.strip() == ""
        assert vm.execute("query-block-jobs")[0]["device"] == "job1", "the job was still running during the checks"

        job.wait_ready(timeout=60)
        job.complete()
        job.wait(timeout=60)
        assert job.outcome == "completed"
        assert str(vm.chain()) == "[b.qcow2]"
        vm.hmp('qemu-io snap-b "flush"')
        assert reads(lab.file("b.qcow2"), ("0", "1M", 0xA1), ("1M", "64k", 0xB2), ("2M", "4M", 0xC3))
        assert domblklist(name) == {"vda": str(lab.file("a.qcow2"))}

        # The toolkit's own guest I/O and checks, through an NBD view of the disk: the guest is not stopped.
        vm.write(None, "8M", "64k", pattern=0xD4)
        view = [("0", "1M", 0xA1), ("1M", "64k", 0xB2), ("2M", "4M", 0xC3), ("8M", "64k", 0xD4)]
        assert vm.verify(view) and not vm.read_matches(None, "8M", "64k", 0xA1)

        # A mirror onto new storage, then the pivot; the diagram shows where the disk now is.
        job = vm.drive_mirror(device="snap-b", target=str(lab.file("e.qcow2")), sync="full", format="qcow2")
        job.wait_ready(timeout=60).complete().wait(timeout=60)
        chain = vm.chain()
        assert str(chain) == "[e.qcow2]"
        assert "active layer · virtio-disk0" in qb.render(chain).pipe(format="svg").decode().replace("&#45;", "-")
        assert vm.verify(view)
        vm.flush()
        assert reads(lab.file("e.qcow2"), *view)
        assert domblklist(name) == {"vda": str(lab.file("a.qcow2"))}, "libvirt missed the pivot too"

        history = vm.history  # what the user sent, through libvirt, as with any QEMU
        sent = [c for c in history["command"] if c != "query-block-jobs"]
        sent = ["block-job-complete" if c == "job-complete" else c for c in sent]  # job-complete on QEMU 10.1+
        assert sent == [
            "blockdev-snapshot-sync",
            "human-monitor-command",
            "block-stream",
            "human-monitor-command",
            "blockdev-snapshot-sync",
            "human-monitor-command",
            "block-commit",
            "block-job-complete",
            "human-monitor-command",
            "human-monitor-command",
            "drive-mirror",
            "block-job-complete",
        ]
        assert set(history["outcome"]) == {"ok"}
    finally:
        vm.session.close()
        vm.session.close()  # twice is fine


def test_a_job_libvirt_started_is_followed(lab, start_domain):
    """``virsh blockcopy`` starts a mirror; the toolkit sees it as a Job and agrees with ``virsh blockjob``."""
    lab.create("a.qcow2", size="64M")
    lab.write("a.qcow2", 0, "4M", pattern=0xA1)
    name = start_domain(lab.file("a.qcow2"))
    vm = qb.connect_libvirt(name, URI, device=DEVICE, passthrough=True)
    try:
        copy = virsh("blockcopy", name, "vda", str(lab.file("copy.qcow2")), "--format", "qcow2", "--bandwidth", "1")
        assert copy.returncode == 0, copy.stderr
        job_id = "copy-vda-libvirt-1-format"  # libvirt's name: copy-DISK-NODE
        job = wait_for(lambda: next((j for j in vm.job_list if j.id == job_id), None), what="libvirt's job")
        assert job.type == "unknown"

        before = vm.execute("query-block-jobs")
        raw = virsh("blockjob", name, "vda", "--info", "--raw").stdout
        after = vm.execute("query-block-jobs")
        fields = dict(re.findall(r"(\w+)=(\d+)", raw))
        assert "type=Block Copy" in raw
        assert [(i["device"], i["type"], i["speed"]) for i in after] == [(job_id, "mirror", 1 << 20)]
        assert int(fields["bandwidth"]) == 1  # MiB/s
        assert int(fields["end"]) == after[0]["len"]
        assert before[0]["offset"] <= int(fields["cur"]) <= after[0]["offset"]
        assert job.status == "running"

        assert virsh("blockjob", name, "vda", "--abort").returncode == 0
        job.wait(timeout=30)
        assert job.outcome == "cancelled"
        assert virsh("blockjob", name, "vda", "--info").stdout.strip() == "No current block job for vda"
        assert str(vm.chain()) == "[a.qcow2]"
    finally:
        vm.session.close()


def test_the_passthrough_warns_once_about_the_taint_and_the_stale_xml(lab, start_domain, monkeypatch):
    lab.create("a.qcow2", size="16M")
    name = start_domain(lab.file("a.qcow2"))
    monkeypatch.setattr(attach, "_warned", False)
    with pytest.warns(UserWarning, match="tainted.*XML stale.*leave out passthrough=True"):
        first = qb.connect_libvirt(name, URI, passthrough=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = qb.connect_libvirt(name, URI, passthrough=True)
    first.session.close()
    second.session.close()


def test_errors_read_as_sentences(lab, start_domain, conn):
    lab.create("a.qcow2", size="16M")
    name = start_domain(lab.file("a.qcow2"))

    with pytest.raises(qb.InputError, match=r"there is no libvirt domain 'no-such-domain' at qemu:///system: "):
        qb.connect_libvirt("no-such-domain", URI)
    with pytest.raises(qb.InputError, match=f"running domains there are .*{name}"):
        qb.connect_libvirt("no-such-domain", URI)

    stopped = f"qblocknb-test-stopped-{uuid.uuid4().hex[:8]}"
    defined = conn.defineXML(domain_xml(stopped, lab.file("a.qcow2"), "qemu"))
    try:
        with pytest.raises(qb.InputError, match=f"'{stopped}' at qemu:///system is not running.*virsh"):
            qb.connect_libvirt(stopped, URI)
    finally:
        defined.undefine()

    vm = qb.connect_libvirt(name, URI, device=DEVICE, passthrough=True)
    try:
        with pytest.raises(qb.CommandError, match=r"QEMU refused 'block-stream': .*no-such-node") as refused:
            vm.session.execute("block-stream", {"device": "no-such-node"})
        assert refused.value.error_class in ("GenericError", "DeviceNotFound")
        with pytest.raises(qb.UnknownCommand):
            vm.execute("no-such-command")

        conn.lookupByName(name).destroy()
        wait_for(lambda: not vm.alive(), what="the session to notice the domain is gone")
        with pytest.raises(qb.QEMUGone, match=f"libvirt domain '{name}'.*(destroyed|not running)"):
            vm.session.execute("query-status")
    finally:
        vm.session.close()
