"""The seed's operations as one contract, run against every backend a Machine speaks to.

Written once, like fsspec's abstract suite (``fsspec/tests/abstract/``), and run over:

- ``socket``: a QEMU the Lab launched, reached over its QMP socket (the chain built live, as the seed does);
- ``passthrough``: a persistent libvirt domain through libvirt's monitor passthrough (``passthrough=True``);
- ``native``: the same kind of domain through libvirt's own API (``qb.connect_libvirt``'s default).

Every test checks the chain shape and the guest's data (``vm.verify``: through QEMU on a socket, through an
NBD view on libvirt), and the files QEMU has closed on disk.  What a backend cannot do is not skipped: its
refusal is the contract there (a sentence, and nothing sent), with the reason in ``LACKS``.  The libvirt
backends also check that the domain's own XML names the chain where libvirt keeps it true (native).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

import libvirt_env
import pytest
from libvirt_env import URI, read_back, xml_chain

import qblocknb as qb
from qblocknb.teaching.seedchain import LAYERS, build_seed_chain, expected_view

conn, domains = libvirt_env.conn, libvirt_env.domains  # the fixtures, where pytest looks for them

SEED = "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]"
BACKENDS = ["socket", *(pytest.param(name, marks=pytest.mark.libvirt) for name in ("passthrough", "native"))]
# What libvirt's API has no form for, and why (qblocknb.model.virsh refuses it before anything is sent).
LACKS = {
    ("native", "stream-intermediate"): "libvirt streams only into the active layer",
    ("native", "mirror-none"): "blockCopy copies the whole disk or its top",
    ("native", "backup-top"): "a libvirt backup copies the whole disk or what changed",
    ("native", "backup-none"): "a libvirt backup copies the whole disk or what changed",
}


@dataclass
class Seeded:
    """The seed's chain ``[a] <-- [b] <-- [c] <-- [d]`` on one backend, each layer with its pattern."""

    backend: str
    vm: qb.Machine
    lab: qb.Lab
    domain: str | None = None

    def node(self, file: str) -> str:
        """The backend's name for a layer: node-D on a socket, libvirt-N-format or vda[N] on libvirt."""
        return self.vm.chain().find(file).node_name

    def path(self, file: str) -> str:
        """A file name QEMU can open: absolute, since QEMU under libvirt runs in /."""
        return str(self.lab.file(file))

    def lacks(self, feature: str) -> str | None:
        return LACKS.get((self.backend, feature))

    def reads(self, file: str, letters: str) -> bool:
        """``file`` (closed by QEMU, or flushed) reads through its own chain as the seed's ``letters``."""
        return read_back(self.lab.file(file), expected_view(letters)) == []

    def true_to_libvirt(self) -> None:
        """On the native backend libvirt's live XML names the chain the Machine shows."""
        if self.backend == "native":
            assert xml_chain(self.domain) == [image.file for image in reversed(self.vm.chain().images)]


@pytest.fixture(params=BACKENDS)
def seeded(request, lab) -> Seeded:
    backend = request.param
    if backend == "socket":
        vm = build_seed_chain(lab)
        yield Seeded(backend, vm, lab)
        return
    domains = request.getfixturevalue("domains")
    below = None
    for layer in LAYERS:
        lab.create(layer.file, size="64M", **({"backing": below} if below else {}))
        lab.write(layer.file, layer.offset, layer.length, pattern=layer.pattern)
        below = layer.file
    name = domains.start(lab.file(below)).name
    vm = qb.connect_libvirt(name, URI, passthrough=backend == "passthrough")
    try:
        assert str(vm.chain()) == SEED
        yield Seeded(backend, vm, lab, name)
    finally:
        vm.session.close()


def refused(seeded: Seeded, feature: str, start) -> bool:
    """Where the backend lacks ``feature``: its sentence names the alternative, and nothing is sent."""
    why = seeded.lacks(feature)
    if why is None:
        return False
    sent = len(seeded.vm.history)
    with pytest.raises(qb.InputError, match="passthrough=True"):
        start()
    assert not seeded.vm.job_list, f"{feature}: no job was started ({why})"
    assert str(seeded.vm.chain()) == SEED and seeded.vm.verify(expected_view("ABCD"))
    assert len(seeded.vm.history) <= sent + 1, "at most the refused command itself is recorded"
    return True


# -- block-stream: the seed's three cases ----------------------------------------------------------
STREAMS = [
    ("d.qcow2", None, "[d.qcow2]"),
    ("d.qcow2", "a.qcow2", "[a.qcow2] <-- [d.qcow2]"),
    ("c.qcow2", "a.qcow2", "[a.qcow2] <-- [c.qcow2] <-- [d.qcow2]"),
]


@pytest.mark.parametrize(("top", "base", "result"), STREAMS, ids=["case1", "case2", "case3"])
def test_stream(seeded, top, base, result):
    vm = seeded.vm
    arguments = {"device": seeded.node(top), **({"base_node": seeded.node(base)} if base else {})}
    if top != "d.qcow2" and refused(seeded, "stream-intermediate", lambda: vm.block_stream(**arguments)):
        return
    job = vm.block_stream(job_id="job0", **arguments)
    job.wait(timeout=60)
    assert job.outcome == "completed"
    assert str(vm.chain()) == result
    assert vm.verify(expected_view("ABCD")), "the guest view must not change"
    assert all(r.valid for r in vm.retired) and vm.retired
    assert seeded.reads("b.qcow2", "AB"), "a streamed-out image stays its point in time"
    seeded.true_to_libvirt()


# -- block-commit: the seed's five cases -----------------------------------------------------------
COMMITS = [
    ("b.qcow2", "a.qcow2", "[a.qcow2] <-- [c.qcow2] <-- [d.qcow2]", "AB"),
    ("c.qcow2", "a.qcow2", "[a.qcow2] <-- [d.qcow2]", "ABC"),
    ("c.qcow2", "b.qcow2", "[a.qcow2] <-- [b.qcow2] <-- [d.qcow2]", "ABC"),
]


@pytest.mark.parametrize(("top", "base", "result", "point"), COMMITS, ids=["case1", "case2", "case4"])
def test_intermediate_commit(seeded, top, base, result, point):
    vm = seeded.vm
    job = vm.block_commit(device=seeded.node("d.qcow2"), top_node=seeded.node(top), base_node=seeded.node(base))
    job.wait(timeout=60)
    assert job.outcome == "completed" and not job.ready
    assert str(vm.chain()) == result
    assert vm.verify(expected_view("ABCD"))
    assert vm.retired and not any(r.valid for r in vm.retired)
    seeded.true_to_libvirt()


@pytest.mark.parametrize(("base", "result"), [("a.qcow2", "[a.qcow2]"), ("b.qcow2", "[a.qcow2] <-- [b.qcow2]")])
def test_active_commit_ready_then_complete(seeded, base, result):
    vm = seeded.vm
    top = seeded.node("d.qcow2")
    job = vm.block_commit(device=top, top_node=top, base_node=seeded.node(base))
    job.wait_ready(timeout=60).complete().wait(timeout=60)
    assert list(job.events["event"]).count("BLOCK_JOB_READY") == 1
    assert str(vm.chain()) == result
    assert vm.verify(expected_view("ABCD"))
    assert "d.qcow2" in {r.name for r in vm.retired if not r.valid}
    seeded.true_to_libvirt()


def test_active_commit_ready_then_cancel_leaves_the_chain(seeded):
    vm = seeded.vm
    top = seeded.node("d.qcow2")
    job = vm.block_commit(device=top, top_node=top, base_node=seeded.node("a.qcow2"))
    job.wait_ready(timeout=60).cancel().wait(timeout=60)
    assert str(vm.chain()) == SEED and vm.chain().active.name == "d.qcow2"
    assert vm.verify(expected_view("ABCD"))
    assert vm.retired == []
    seeded.true_to_libvirt()


# -- mirror ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("sync", ["full", "top"])
@pytest.mark.parametrize("end", ["complete", "cancel"])
def test_mirror(seeded, sync, end):
    vm = seeded.vm
    job = vm.drive_mirror(device=seeded.node("d.qcow2"), target=seeded.path("e.qcow2"), sync=sync, format="qcow2")
    job.wait_ready(timeout=60)
    getattr(job, end)()
    job.wait(timeout=60)
    expected = "[e.qcow2]" if sync == "full" else "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [e.qcow2]"
    assert str(vm.chain()) == (expected if end == "complete" else SEED)
    assert vm.verify(expected_view("ABCD"))
    if end == "cancel":  # QEMU closed the copy: a point in time, on disk
        assert seeded.reads("e.qcow2", "ABCD")
    seeded.true_to_libvirt()


def test_mirror_sync_none(seeded):
    vm = seeded.vm
    start = lambda: vm.drive_mirror(  # noqa: E731
        device=seeded.node("d.qcow2"), target=seeded.path("e.qcow2"), sync="none", format="qcow2"
    )
    if refused(seeded, "mirror-none", start):
        assert not seeded.lab.file("e.qcow2").exists()
        return
    job = start()
    job.wait_ready(timeout=60).cancel().wait(timeout=60)
    assert str(vm.chain()) == SEED and vm.verify(expected_view("ABCD"))
    assert str(seeded.lab.chain("e.qcow2")) == f"{SEED} <-- [e.qcow2]", "sync=none: an overlay of the source"


# -- backup ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("sync", ["full", "top", "none"])
def test_backup(seeded, sync):
    vm = seeded.vm
    start = lambda: vm.drive_backup(  # noqa: E731
        device=seeded.node("d.qcow2"), target=seeded.path("e.qcow2"), sync=sync, format="qcow2"
    )
    if refused(seeded, f"backup-{sync}", start):
        return
    job = start()
    if sync == "none":  # a point-in-time view that lasts until cancelled: nothing is copied unless overwritten
        job.cancel().wait(timeout=60)
    else:
        job.wait(timeout=60)
        assert job.outcome == "completed" and not job.ready
        assert seeded.reads("e.qcow2", "ABCD"), "the backup holds the guest view"
    assert str(vm.chain()) == SEED and vm.verify(expected_view("ABCD"))
    seeded.true_to_libvirt()


def test_incremental_backup_after_a_full_one(seeded):
    """A full backup and its bitmap at one instant, then an incremental: full + incremental restore the view."""
    vm = seeded.vm
    node = seeded.node("d.qcow2")
    full, incremental = seeded.path("full.qcow2"), seeded.path("inc.qcow2")
    jobs = qb.transaction(
        vm,
        [
            qb.actions.bitmap_add(node, "bitmap0", persistent=True),
            qb.actions.action("drive-backup", device=node, target=full, sync="full", format="qcow2"),
        ],
    )
    jobs[0].wait(timeout=60)
    job = vm.drive_backup(device=node, target=incremental, sync="incremental", bitmap="bitmap0", format="qcow2")
    job.wait(timeout=60)
    assert job.outcome == "completed"
    assert seeded.reads("full.qcow2", "ABCD")
    subprocess.run(["qemu-img", "rebase", "-u", "-F", "qcow2", "-b", full, incremental], check=True)
    assert seeded.reads("inc.qcow2", "ABCD"), "the incremental over the full backup is the guest view"
    seeded.true_to_libvirt()


# -- a plan, and a form ----------------------------------------------------------------------------
def test_a_plan_runs_and_shows_its_virsh_lines(seeded):
    vm = seeded.vm
    plan = qb.plan(vm, "[a.qcow2] <-- [d.qcow2]")
    assert "virsh " in str(plan)
    assert str(plan.run(vm, timeout=60)) == "[a.qcow2] <-- [d.qcow2]"
    assert vm.verify(expected_view("ABCD"))
    seeded.true_to_libvirt()


def test_the_dashboards_stream_form_runs(seeded):
    board = qb.widgets.Dashboard(seeded.vm)
    try:
        form = board.forms["block-stream"]
        form.fields["device"].value = seeded.node("d.qcow2")
        form.fields["base-node"].value = seeded.node("a.qcow2")
        assert "virsh " in form.command_view.value
        form.run_button.click()
        job = form.result
        assert isinstance(job, qb.Job), form.error.value
        job.wait(timeout=60)
        assert str(seeded.vm.chain()) == "[a.qcow2] <-- [d.qcow2]"
        assert seeded.vm.verify(expected_view("ABCD"))
        seeded.true_to_libvirt()
    finally:
        board.close()
