"""Pull-mode backups by image fleecing (``qb.backup.pull``): a live disk's point in time served over NBD.

With the tiny Linux guest writing numbered records the whole time, a full pull backup and two incrementals are
each saved, restored as a qcow2 chain and checked record by record against the guest's writes at the backup's
point in time; an incremental holds only what its bitmap marked dirty. Without a guest (HMP writes, fast), both
fleecing forms are checked: the view does not move when the guest writes, the diagrams show the filter, the
scratch image and the export, a backup nobody saved loses no bitmap change, and ``close`` leaves no node, export,
bitmap (unless kept) or file behind.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pytest

import qblocknb as qb
from qblocknb.backup import fleecing
from qblocknb.live import images
from qblocknb.render import svg, text

MiB = 1 << 20
WRITER = {"size": "2M", "record": "64k", "offset": "8M", "rate": 20}
DISK_NODES = {"node-A", "file-node-A"}


def node_names(vm: qb.Machine) -> set[str]:
    return {node["node-name"] for node in vm.query("query-named-block-nodes", {"flat": True})}


def raw_copy(lab: qb.Lab, image: str) -> Path:
    """The image read through its backing chain (the restored backup) as one raw file."""
    raw = lab.file(f"{image}.raw")
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(lab.file(image)), str(raw)], check=True)
    return raw


def own_data(path: Path) -> list[tuple[int, int]]:
    """Ranges a qcow2 holds itself (depth 0), data or zero clusters: what a restore takes from this file."""
    return [(e["start"], e["length"]) for e in images.allocation_map(path) if e["depth"] == 0 and e["present"]]


def within(ranges: list[tuple[int, int]], extents: list[tuple[int, int]]) -> bool:
    return all(any(s <= start and start + n <= s + m for s, m in extents) for start, n in ranges)


def chain_svg(vm: qb.Machine) -> str:
    """The chain diagram's SVG as the notebook and the Dashboard show it, graphviz's entities undone."""
    return unescape(svg(vm.chain()))


def assert_fleecing_drawn(vm: qb.Machine, form: str, socket: Path, scratch: str = "scratch.qcow2") -> str:
    """The chain's SVG shows the filter (copy-before-write form), the scratch image and the export with its URI."""
    drawn = chain_svg(vm)
    assert scratch in drawn and "point-in-time scratch" in drawn
    assert 'id="export:pull0"' in drawn and f"socket={socket}" in drawn and "nbd+unix:///pull0" in drawn
    if form == fleecing.CBW:  # the device writes through the filter, which copies old data into the scratch
        assert 'id="filter:pull0-cbw"' in drawn and "copy-before-write filter" in drawn
        assert 'id="scratch:pull0-scratch"' in drawn and 'id="copies:pull0-cbw"' in drawn
        assert 'id="filter:pull0-access"' in drawn and "serves pull0-access" in drawn
    else:  # the sync=none job writes the scratch, which is exported
        assert 'id="job:pull0"' in drawn and 'id="target:pull0-scratch"' in drawn and "serves pull0-scratch" in drawn
    return drawn


def assert_fleecing_gone(vm: qb.Machine) -> None:
    drawn = chain_svg(vm)
    for gone in ("pull0", "scratch", "export:", "filter:", "copy-before-write", "nbd+unix"):
        assert gone not in drawn, gone
    assert 'id="image:node-A"' in drawn and 'id="attached:virtio0"' in drawn


def assert_left_as_it_was(vm: qb.Machine, lab: qb.Lab, files: set[str], bitmap_names: set[str]) -> None:
    assert node_names(vm) == DISK_NODES
    assert vm.query("query-block-exports") == []
    assert not any(job for job in vm.query("query-block-jobs"))
    assert set(qb.bitmaps.frame(vm)["name"]) == bitmap_names
    assert vm.disk("virtio0")["inserted"]["node-name"] == "node-A"
    assert {p.name for p in lab.path.iterdir()} == files
    assert str(vm.chain()) == "[a.qcow2]"


# -- under the guest's writer -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def guest_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[qb.Lab]:
    with qb.Lab(tmp_path_factory.mktemp("pull-guest") / "lab") as lab:
        yield lab


def test_a_full_and_two_incrementals_restore_the_guest_at_each_point_in_time(guest_lab):
    lab = guest_lab
    lab.create("a.qcow2", size="64M")
    lab.write("a.qcow2", 0, "4M", pattern=0xA1)
    vm = lab.launch("a.qcow2", node_name="node-A", guest=True)
    files = {p.name for p in lab.path.iterdir()}
    vm.guest.start_writer(**WRITER)
    time.sleep(0.5)
    for number in range(3):
        backup = qb.backup.pull(vm, "virtio0", bitmap="b0")
        assert backup.kind == ("full" if number == 0 else "incremental")
        assert backup.fleece.form == fleecing.CBW  # every supported QEMU has the filter and qom-set
        time.sleep(1.0)  # the guest writes on while the view is open: none of it may reach this backup
        name = f"backup{number}.qcow2"
        if number == 0:
            backup.save(name)
        else:
            dirty = [tuple(map(int, row)) for row in backup.extents.itertuples(index=False)]
            backup.save_incremental(name, backing=f"backup{number - 1}.qcow2")
            held = own_data(lab.file(name))
            assert held and within(held, dirty), f"{name} holds {held}, beyond the dirty {dirty}"
            assert within(dirty, [(8 * MiB, 2 * MiB)]), f"only the writer's region changed, not {dirty}"
        taken = backup.taken
        backup.close(keep_bitmap=number < 2)
        files.add(name)
        writes_while_open = vm.guest.writer_progress
        assert ((writes_while_open.kind == "W") & (writes_while_open.t > taken[1])).any(), "the guest stopped"
        raw = raw_copy(lab, name)
        files.add(raw.name)
        assert vm.guest.check_copy(raw, *taken) == [], f"{name} is not the guest's disk at its point in time"
        assert images.read_matches(raw, 0, "4M", 0xA1)
        raw.unlink()
        files.discard(raw.name)
    report = vm.guest.stop_writer()
    assert report.ok, str(report)
    assert_left_as_it_was(vm, lab, files, set())
    assert [lab.check(f"backup{n}.qcow2").get("check-errors", 0) for n in range(3)] == [0, 0, 0]
    assert images.info_chain(lab.file("backup2.qcow2"))[1]["filename"].endswith("backup1.qcow2")


# -- both forms, no guest ----------------------------------------------------------------------------------------
@pytest.fixture(params=fleecing.FORMS)
def form_vm(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[qb.Machine, qb.Lab, str]]:
    with qb.Lab(tmp_path / "lab") as lab:
        lab.create("a.qcow2", size="64M")
        lab.write("a.qcow2", 0, "4M", pattern=0xA1)
        yield lab.launch("a.qcow2", node_name="node-A"), lab, request.param


def test_the_view_holds_still_and_the_diagrams_show_it(form_vm):
    vm, lab, form = form_vm
    files = {p.name for p in lab.path.iterdir()}
    backup = qb.backup.pull(vm, "virtio0", form=form)
    vm.write("virtio0", 0, "1M", pattern=0x5A)
    assert images.runs_match(backup.uri, [(0, "4M", 0xA1)], fmt="raw"), "the guest's write reached the view"
    assert vm.read_matches("virtio0", 0, "1M", 0x5A) and vm.read_matches("virtio0", "1M", "3M", 0xA1)
    assert list(backup.extents.itertuples(index=False, name=None)) == [(0, 4 * MiB)]
    full = qb.render(vm, full=True).source
    for node in backup.fleece.nodes:
        assert f'"format:{node}"' in full or f'"filter:{node}"' in full, node
    assert '"export:pull0"' in full
    assert_fleecing_drawn(vm, form, backup.socket)
    backup.save("full.qcow2")
    backup.close()
    assert_fleecing_gone(vm)
    assert lab.compare("full.qcow2", "a.qcow2").identical is False
    assert lab.read_matches("full.qcow2", 0, "4M", 0xA1)
    assert_left_as_it_was(vm, lab, files | {"full.qcow2"}, set())
    assert vm.verify([(0, "1M", 0x5A), ("1M", "3M", 0xA1)])


def test_an_unsaved_incremental_loses_nothing_and_keep_bitmap_false_removes_it(form_vm):
    vm, lab, form = form_vm
    files = {p.name for p in lab.path.iterdir()}
    with qb.backup.pull(vm, "virtio0", bitmap="b0", form=form) as full:
        full.save("full.qcow2")
    vm.write("virtio0", "1M", "64k", pattern=0x11)
    backup = qb.backup.pull(vm, "virtio0", bitmap="b0", form=form)
    vm.write("virtio0", "2M", "64k", pattern=0x22)  # after the point in time: the next incremental's
    assert list(backup.extents.itertuples(index=False, name=None)) == [(MiB, 64 << 10)]
    backup.close()  # nothing saved: b0 still holds every change since the full backup
    assert qb.bitmaps.find(vm, "node-A", "b0").dirty_bytes == 128 << 10
    backup = qb.backup.pull(vm, "virtio0", bitmap="b0", form=form)
    assert list(backup.extents.itertuples(index=False, name=None)) == [(MiB, 64 << 10), (2 * MiB, 64 << 10)]
    backup.save_incremental("inc.qcow2", backing="full.qcow2")
    with pytest.raises(qb.InputError, match=r"inc\.qcow2 already exists"):
        backup.save_incremental("inc.qcow2", backing="full.qcow2")
    backup.close(keep_bitmap=False)
    assert own_data(lab.file("inc.qcow2")) == [(MiB, 64 << 10), (2 * MiB, 64 << 10)]
    assert lab.read_matches("inc.qcow2", "1M", "64k", 0x11) and lab.read_matches("inc.qcow2", "2M", "64k", 0x22)
    assert lab.read_matches("inc.qcow2", 0, "1M", 0xA1)
    assert_left_as_it_was(vm, lab, files | {"full.qcow2", "inc.qcow2"}, set())
    with pytest.raises(qb.InputError, match="is closed"):
        backup.save("again.qcow2")


def test_a_busy_nbd_server_is_refused_with_a_sentence_and_nothing_left(form_vm):
    vm, lab, form = form_vm
    files = {p.name for p in lab.path.iterdir()}
    socket = lab.path / "other.sock"
    vm.nbd_server_start(addr={"type": "unix", "data": {"path": str(socket)}})
    with pytest.raises(qb.Error, match="already running for something else"):
        qb.backup.pull(vm, "virtio0", bitmap="b0", form=form)
    vm.nbd_server_stop()
    socket.unlink(missing_ok=True)
    assert_left_as_it_was(vm, lab, files, set())


def test_fleecing_another_client_set_up_is_drawn_from_qemus_own_state(form_vm):
    """No PullBackup: the fleecing and the export made by plain QMP commands, as another client would."""
    vm, lab, form = form_vm
    files = {p.name for p in lab.path.iterdir()}
    folder = lab.path / "other"
    folder.mkdir(mode=0o700)
    socket = folder / "nbd.sock"
    fleece = fleecing.insert(vm, vm.disk("virtio0"), "pull0", folder / "work.qcow2", form)
    vm.execute("nbd-server-start", {"addr": {"type": "unix", "data": {"path": str(socket)}}})
    vm.execute("block-export-add", {"type": "nbd", "id": "pull0", "node-name": fleece.view, "writable": False})
    uri = f"nbd+unix:///{fleece.view}?socket={socket}"  # the export's name defaults to its node's
    drawn = assert_fleecing_drawn(vm, form, socket, scratch="work.qcow2")
    assert f"nbd+unix:///{fleece.view}" in drawn
    lines = text(vm.chain())
    assert "exports:" in lines and uri in lines and ("pull0-cbw" in lines) == (form == fleecing.CBW)
    vm.write("virtio0", 0, "1M", pattern=0x3C)
    assert images.runs_match(uri, [(0, "4M", 0xA1)], fmt="raw"), "the guest's write reached the view"
    vm.execute("block-export-del", {"id": "pull0"})
    vm.execute("nbd-server-stop")
    fleecing.remove(vm, fleece)
    folder.rmdir()
    assert_fleecing_gone(vm)
    assert_left_as_it_was(vm, lab, files, set())
    assert vm.verify([(0, "1M", 0x3C), ("1M", "3M", 0xA1)])
