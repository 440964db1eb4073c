"""The seed's operations on QEMUs the toolkit did not start, named the way libvirt and ``-drive`` name things."""

from __future__ import annotations

from pathlib import Path

import pytest
from foreign import VARIANTS, ForeignQemu, Variant, libvirt_style, scsi_hd

import qblocknb as qb

A, B, C, E = 0xA1, 0xB2, 0xC3, 0xE5


@pytest.fixture
def foreign(tmp_path: Path):
    """Start a QEMU by hand (``start(disk_args, paused=...)``), attach to it, and kill it after the test."""
    processes: list[ForeignQemu] = []
    machines: list[qb.Machine] = []

    def start(disk_args: list[str], paused: bool = True, device: str | None = None) -> qb.Machine:
        processes.append(ForeignQemu(tmp_path, disk_args, paused=paused))
        machines.append(qb.connect(processes[-1].socket, device=device))
        return machines[-1]

    yield start
    for vm in machines:
        vm.session.close()
    for qemu in processes:
        qemu.end()


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_seed_operations_on_a_foreign_qemu(lab: qb.Lab, foreign, variant: Variant) -> None:
    lab.create("a.qcow2", size="16M")
    lab.write("a.qcow2", 0, "1M", pattern=A)
    vm = foreign(variant.disk_args(lab.file("a.qcow2")), paused=variant.name != "libvirt")
    assert vm.device == variant.device
    assert vm.disks == [variant.device]

    chain = vm.chain()
    assert str(chain) == "[a.qcow2]"
    assert chain.device == variant.device
    svg = qb.render(chain).pipe(format="svg").decode()
    assert "a.qcow2" in svg
    automatic = variant.name.startswith("drive-")  # -drive gives the node a name like #block123
    assert chain.active.automatic is automatic
    if automatic:
        assert chain.active.label == "a.qcow2" and "#block" not in svg

    # two snapshots, whatever the base node is called (libvirt-1-format, #block123, disk-fmt)
    vm.blockdev_snapshot_sync(
        node_name=chain.active.node_name, snapshot_file=str(lab.file("b.qcow2")), snapshot_node_name="snap-b"
    )
    vm.write(None, "1M", "64k", pattern=B)
    vm.blockdev_snapshot_sync(node_name="snap-b", snapshot_file=str(lab.file("c.qcow2")), snapshot_node_name="snap-c")
    vm.write(variant.device, "2M", "64k", pattern=C)
    assert str(vm.chain()) == "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2]"
    view = [(0, "1M", A), ("1M", "64k", B), ("2M", "64k", C)]
    assert vm.verify(view)
    assert vm.read_matches(None, "1M", "64k", B) and not vm.read_matches(None, "1M", "64k", C)

    # stream b into c: the intermediate case; a base QEMU named itself is given by its file name
    base = vm.chain().base
    by_name = {"base": base.file} if automatic else {"base_node": base.node_name}
    vm.block_stream(device="snap-c", job_id="stream0", **by_name).wait(timeout=60)
    assert str(vm.chain()) == "[a.qcow2] <-- [c.qcow2]"
    assert vm.verify(view)
    vm.flush()
    assert str(lab.chain("c.qcow2")) == "[a.qcow2] <-- [c.qcow2]"
    assert lab.runs_match("c.qcow2", view)

    # active commit into a, then complete
    job = vm.block_commit(device="snap-c", job_id="commit0")
    job.wait_ready(timeout=60)
    job.complete()
    job.wait(timeout=60)
    assert str(vm.chain()) == "[a.qcow2]"
    assert vm.verify(view)

    # mirror onto new storage, then pivot
    root = vm.chain().active.node_name
    job = vm.drive_mirror(device=root, target=str(lab.file("e.qcow2")), sync="full", format="qcow2", job_id="mirror0")
    job.wait_ready(timeout=60)
    job.complete()
    job.wait(timeout=60)
    assert str(vm.chain()) == "[e.qcow2]"
    vm.write(None, "3M", "64k", pattern=E)
    assert vm.verify([*view, ("3M", "64k", E)])
    vm.flush()
    assert lab.runs_match("e.qcow2", [*view, ("3M", "64k", E)])
    assert not lab.read_matches("a.qcow2", "3M", "64k", E)  # the old image stayed as it was at the pivot
    if variant.name == "libvirt":  # the guest ran all along: no check may leave it stopped
        assert vm.query_status()["running"] is True


def test_libvirt_chain_names_protocol_nodes_as_part_of_the_image(lab: qb.Lab, foreign) -> None:
    """libvirt opens a backing chain as storage/format pairs: two layers, not four."""
    lab.create("a.qcow2", size="16M")
    lab.create("b.qcow2", backing="a.qcow2")
    disk = libvirt_style(lab.file("b.qcow2"), index=2)
    disk[disk.index("-blockdev") + 3] = disk[disk.index("-blockdev") + 3].replace(
        '"file": "libvirt-2-storage"', '"file": "libvirt-2-storage", "backing": "libvirt-1-format"'
    )
    base = libvirt_style(lab.file("a.qcow2"), index=1)[:4]  # only its two -blockdev nodes
    vm = foreign(base + disk)
    chain = vm.chain()
    assert str(chain) == "[a.qcow2] <-- [b.qcow2]"
    assert chain.node_names == ["libvirt-1-format", "libvirt-2-format"]
    assert {"libvirt-1-storage", "libvirt-2-storage"} <= set(chain.filter_nodes)


def test_several_disks_are_named_and_commands_find_their_own(lab: qb.Lab, foreign) -> None:
    lab.create("a.qcow2", size="16M")
    lab.create("s.qcow2", size="16M")
    lab.write("s.qcow2", 0, "64k", pattern=0x51)
    vm = foreign(libvirt_style(lab.file("a.qcow2")) + scsi_hd(lab.file("s.qcow2")))
    assert sorted(vm.disks) == ["scsi-disk0", "virtio-disk0"]
    with pytest.raises(qb.InputError, match=r"this QEMU has 2 disks .*set vm.device"):
        vm.chain()
    assert str(vm.chain("scsi-disk0")) == "[s.qcow2]"
    # a snapshot of the second disk finds its chain by the node name alone
    vm.blockdev_snapshot_sync(node_name="disk-fmt", snapshot_file=str(lab.file("t.qcow2")), snapshot_node_name="t")
    assert str(vm.chain("scsi-disk0")) == "[s.qcow2] <-- [t.qcow2]"
    vm.write("scsi-disk0", "64k", "64k", pattern=0x52)
    vm.block_stream(device="t", job_id="s").wait(timeout=60)
    assert str(vm.chain("scsi-disk0")) == "[t.qcow2]"
    vm.device = "scsi-disk0"
    assert vm.verify([(0, "64k", 0x51), ("64k", "64k", 0x52)])
    with pytest.raises(qb.InputError, match=r"device 'nope' has no medium or does not exist: devices are"):
        vm.device = "nope"
    assert str(vm.chain("virtio-disk0")) == "[a.qcow2]"  # the other disk never moved


def test_connect_names_a_disk_that_is_not_there(lab: qb.Lab, foreign) -> None:
    lab.create("a.qcow2", size="16M")
    with pytest.raises(qb.InputError, match="devices are virtio-disk0"):
        foreign(libvirt_style(lab.file("a.qcow2")), device="virtio0")


def test_the_dashboard_works_on_a_libvirt_style_vm(lab: qb.Lab, foreign) -> None:
    from html import unescape

    from test_widgets import wait_for

    from qblocknb.widgets import Dashboard

    lab.create("a.qcow2", size="16M")
    lab.write("a.qcow2", 0, "1M", pattern=A)
    vm = foreign(libvirt_style(lab.file("a.qcow2")), paused=False)
    vm.blockdev_snapshot_sync(
        node_name="libvirt-1-format", snapshot_file=str(lab.file("b.qcow2")), snapshot_node_name="snap-b"
    )
    vm.write(None, "1M", "64k", pattern=B)
    board = Dashboard(vm)
    try:
        wait_for(lambda: "active layer · virtio-disk0" in unescape(board.chain_view.svg), "the diagram")
        stream = board.forms["block-stream"]
        assert stream.fields["device"].value == "snap-b"
        stream.run_button.click()
        wait_for(lambda: str(board.chain_view.chain) == "[b.qcow2]", "the stream to end in the view")
        assert stream.error.value == ""
        assert vm.verify([(0, "1M", A), ("1M", "64k", B)])
        assert vm.query_status()["running"] is True
    finally:
        board.close()
