"""Real I/O errors, injected with ``blkdebug``, under each job and each error policy, as QEMU documents them.

``BlockdevOnError`` (qapi/block-core.json): ``report`` ends the job with the error; ``ignore`` only sends
``BLOCK_JOB_ERROR`` (mirror, commit and backup retry the request and may still complete; stream goes on and ends
with the error); ``stop`` pauses the job with ``io-status`` ``failed`` (``nospace`` for ENOSPC) until a resume;
``enospc`` is ``stop`` for ENOSPC and ``report`` otherwise. Stream and commit take ``on-error``; mirror and backup
``on-source-error`` and ``on-target-error``. Stream reports every error as a read (its copy-on-read is one).

Each fault fires once (a transient fault), so a job resumed after ``stop`` finds it gone and completes: its data
and its chain are checked then, as after every other outcome.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

import qblocknb as qb
from qblocknb.live import faults
from qblocknb.live.faults import EIO, ENOSPC, Fault
from qblocknb.model.jobfaults import ACTION_WORDS
from qblocknb.model.palette import ERROR
from qblocknb.render.labels import job_caption
from qblocknb.teaching.seedchain import LAYERS, build_seed_chain, expected_view
from qblocknb.widgets.jobmonitor import JobMonitor
from qblocknb.widgets.plots import plot_timeline

SEED = ["a.qcow2", "b.qcow2", "c.qcow2", "d.qcow2"]
MiB = 1 << 20


def faulty_seed_chain(lab: qb.Lab, faulty: str, fault: Fault) -> qb.Machine:
    """The seed's chain, same data, with layer ``faulty`` over ``blkdebug``.

    The layers up to the faulty one are made offline and opened with ``faults.add_overlay``; those above it are
    made by QEMU (``blockdev-snapshot-sync``) and written by the guest, as in the seed.
    """
    upto = [layer.node_name for layer in LAYERS].index(faulty)
    for below, layer in itertools.pairwise([None, *LAYERS[: upto + 1]]):
        lab.create(layer.file, size="64M" if below is None else None, backing=below.file if below else None)
        lab.write(layer.file, layer.offset, layer.length, pattern=layer.pattern)
    vm = lab.launch(LAYERS[0].file, node_name=LAYERS[0].node_name)
    for layer in LAYERS[1 : upto + 1]:
        faults.add_overlay(vm, layer.file, layer.node_name, *([fault] if layer.node_name == faulty else []))
    for below, layer in itertools.pairwise(LAYERS[upto:]):
        vm.blockdev_snapshot_sync(
            node_name=below.node_name, snapshot_file=layer.file, snapshot_node_name=layer.node_name, format="qcow2"
        )
        vm.write(vm.device, layer.offset, layer.length, pattern=layer.pattern)
    return vm


def on_disk(lab: qb.Lab, vm: qb.Machine, active: str = "d.qcow2") -> list[str]:
    """The chain's shape as QEMU wrote it into the image headers, base first; the live chain must agree.

    QEMU names a layer over ``blkdebug`` (and, once a commit has reopened it, every layer above it) with a
    ``json:`` description; the live chain follows those names too (``test_the_live_chain_over_a_reopened_...``).
    """
    vm.flush()
    files = [image.name.split(" ")[0] for image in lab.chain(active).images]
    live = [image.name.split(" ")[0] for image in vm.chain().images]
    assert live == files, f"QEMU's chain {live} is not the one on disk {files}"
    return files


def guest_reads(vm: qb.Machine, letters: str) -> bool:
    """True when the guest, reading through QEMU, sees the layers ``letters`` (base first).

    A read that QEMU fails raises (``test_a_guest_read_that_fails_is_an_error_not_a_match``), so a fault left
    behind cannot pass for data.
    """
    return all(vm.read_matches(vm.device, *run) for run in expected_view(letters))


def until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Wait, bounded, for something the sampler or the event thread is about to report."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


@dataclass(frozen=True)
class Case:
    """One job on the seed chain: where its source and target faults go, and how it ends."""

    command: str
    arguments: dict
    source: str  # the node whose data reads fail for a source fault
    target: str  # the node whose data writes fail for a target fault
    after: list[str]  # the chain's images once the job completed
    ready: bool = False  # mirror and active commit: READY, then complete
    policies: tuple[str, str] = ("on-error", "on-error")  # the argument for a source fault, for a target fault

    def operation(self, side: str) -> str:
        """What BLOCK_JOB_ERROR says: stream reports all as reads."""
        return "read" if side == "source" or self.command == "block-stream" else "write"


SIDE_POLICIES = ("on-source-error", "on-target-error")  # mirror and backup
CASES = {
    "stream": Case(
        "block-stream", {"device": "node-D", "base-node": "node-A"}, "node-B", "node-D", ["a.qcow2", "d.qcow2"]
    ),
    "commit": Case(
        "block-commit",
        {"device": "node-D", "top-node": "node-C", "base-node": "node-B"},
        "node-C",
        "node-B",
        ["a.qcow2", "b.qcow2", "d.qcow2"],
    ),
    "active-commit": Case(
        "block-commit", {"device": "node-D", "base-node": "node-B"}, "node-D", "node-B", ["a.qcow2", "b.qcow2"], True
    ),
    "mirror": Case(
        "blockdev-mirror",
        {"device": "node-D", "target": "node-E", "sync": "full"},
        "node-D",
        "node-E",
        ["e.qcow2"],
        True,
        SIDE_POLICIES,
    ),
    "backup": Case(
        "blockdev-backup",
        {"device": "node-D", "target": "node-E", "sync": "full"},
        "node-D",
        "node-E",
        SEED,
        policies=SIDE_POLICIES,
    ),
}
# (policy, errno) -> QEMU's action, as BLOCK_JOB_ERROR names it
POLICIES = {
    ("report", EIO): "report",
    ("ignore", EIO): "ignore",
    ("stop", EIO): "stop",
    ("enospc", ENOSPC): "stop",
    ("enospc", EIO): "report",
}
IO_STATUS = {EIO: "failed", ENOSPC: "nospace"}


def start(lab: qb.Lab, case: Case, side: str, policy: str, errno: int) -> tuple[qb.Machine, qb.Job]:
    """The seed chain with one fault where ``side`` says, and the job started with ``policy`` for it."""
    node = case.source if side == "source" else case.target
    fault = Fault("read" if side == "source" else "write", errno, once=True)  # the source is read, the target written
    vm = faulty_seed_chain(lab, node, fault) if node != "node-E" else build_seed_chain(lab)
    if "target" in case.arguments:
        faults.add_target(vm, "e.qcow2", "node-E", *([fault] if node == "node-E" else []), size="64M")
    assert on_disk(lab, vm) == SEED
    if fault.operation == "write":  # a read would trip a read fault before the job does
        assert guest_reads(vm, "ABCD")
    argument = case.policies[side == "target"]
    job = vm.execute(case.command, {**case.arguments, "job-id": "job0", argument: policy})
    return vm, job


def finish(job: qb.Job, case: Case) -> None:
    if case.ready:
        job.wait_ready(timeout=30).complete()
    job.wait(timeout=30)


def completed_with_right_data(lab: qb.Lab, vm: qb.Machine, job: qb.Job, case: Case) -> None:
    assert job.ended and job.outcome == "completed"
    assert on_disk(lab, vm, case.after[-1]) == case.after
    assert guest_reads(vm, "ABCD"), "the guest reads what it read before the job"
    assert lab.runs_match(case.after[-1], expected_view("ABCD")), "and so do the files, through their headers"
    if case.command == "blockdev-backup":
        assert lab.runs_match("e.qcow2", expected_view("ABCD")), "the backup holds the disk at the job's start"


@pytest.mark.parametrize(("policy", "errno"), list(POLICIES), ids=[f"{p}-{e}" for p, e in POLICIES])
@pytest.mark.parametrize("side", ["source", "target"])
@pytest.mark.parametrize("name", list(CASES))
def test_an_io_error_under_each_policy_ends_as_qemu_documents(lab, name, side, policy, errno):
    case = CASES[name]
    vm, job = start(lab, case, side, policy, errno)
    action, operation = POLICIES[policy, errno], case.operation(side)
    fails = action == "report" or (action == "ignore" and case.command == "block-stream")

    if action == "stop":
        with pytest.raises(qb.JobError) as caught:
            job.wait(timeout=30)
        assert str(caught.value) == (
            f"job 'job0' ({case.command}) is paused on an I/O error and will not end: QEMU stopped it on a "
            f"{operation} error, as its error policy says; call job.resume() once the fault is fixed, or "
            "job.cancel(force=True) to give up."
        )
        assert job.status == "paused" and job.stopped_on_error and job.io_error == f"{operation} error, stopped"
        assert until(lambda: "paused" in set(job.timeline["status"])), "the sampler records the pause"
        paused = job.timeline[job.timeline["status"] == "paused"]
        assert set(paused["io-status"]) == {IO_STATUS[errno]} and paused["paused"].all()
        assert job.io_status == IO_STATUS[errno]
        assert on_disk(lab, vm) == SEED, "nothing changed while paused"
        job.resume()  # the fault fired once: it is gone, and the job retries what failed
        assert job.io_status == "ok" and job.io_error is None
        finish(job, case)
        completed_with_right_data(lab, vm, job, case)
        assert "paused" in list(job.events["status"])
    elif fails:
        with pytest.raises(qb.JobError) as caught:
            finish(job, case)
        assert str(caught.value) == (
            f"job 'job0' ({case.command}) failed on a {operation} error ({ACTION_WORDS[action]}): Input/output error; "
            "see job.events for the whole story."
        )
        assert (job.ended, job.outcome, job.error) == (True, "failed", "Input/output error")
        assert on_disk(lab, vm) == SEED, "a failed job leaves the chain as it was"
        assert guest_reads(vm, "ABCD")
    else:
        finish(job, case)
        completed_with_right_data(lab, vm, job, case)

    assert until(lambda: job.status == "null"), "QEMU dismisses the job by itself"
    errors = job.events[job.events["event"] == "BLOCK_JOB_ERROR"]
    assert list(zip(errors["operation"], errors["action"], strict=True)) == [(operation, action)]
    assert list(job.events["event"])[-1] == "JOB_STATUS_CHANGE" and list(job.events["status"])[-1] == "null"
    completed = job.events[job.events["event"] == "BLOCK_JOB_COMPLETED"]
    assert list(completed["error"].fillna("none")) == ["Input/output error" if fails else "none"]


def test_a_job_stopped_on_an_error_shows_in_the_monitor_and_the_diagram(lab):
    vm, job = start(lab, CASES["mirror"], "target", "stop", ENOSPC)
    monitor = JobMonitor(job, plot=False)
    try:
        assert until(lambda: job.stopped_on_error and job.io_status == "nospace")
        monitor.update()
        assert monitor.fault.value == (
            f'<span style="color:{ERROR}">⚠ job0: write error, stopped · io-status nospace · '
            "paused by QEMU: fix the fault, then press Resume</span>"
        )
        enabled = {verb for verb, button in monitor.buttons.items() if not button.disabled}
        assert enabled == {"cancel", "resume"}, "Resume is what the job needs; Complete and Pause are refused"

        chain = vm.chain()
        graph = qb.render(chain)
        edge = next(line for line in graph.body if 'id="job:job0"' in line)
        assert f'color="{ERROR}"' in edge and "job0: write error, stopped" in edge
        svg = graph.pipe(format="svg").decode()
        assert "job0: write error, stopped" in svg and "mirror · paused" in svg
        assert [image.node_name for image in chain.targets] == ["node-E"]

        figure = plot_timeline(job)
        marks = [line for line in figure.axes[0].lines if line.get_color() == ERROR]
        assert len(marks) == 1 and [text.get_text() for text in figure.axes[0].texts] == ["write error, stopped"]
        assert 0 <= marks[0].get_xdata()[0] <= job.timeline["t"].max(), "the error sits where it happened"

        monitor.press("resume")
        assert monitor.fault.value == "" and monitor.buttons["resume"].disabled
        job.wait_ready(timeout=30)
        (shown,) = vm.chain().jobs
        assert job_caption(shown) == "job0 · mirror · ready · 100%", "the error is gone from the diagram"
        job.complete().wait(timeout=30)
    finally:
        monitor.close()
    assert [image.node_name for image in vm.chain().images] == ["node-E"] and guest_reads(vm, "ABCD")
    assert on_disk(lab, vm, "e.qcow2") == ["e.qcow2"] and lab.runs_match("e.qcow2", expected_view("ABCD"))


@pytest.mark.parametrize("name", ["stream", "mirror"])
def test_a_job_stopped_on_an_error_is_cancelled_only_by_force(lab, name):
    vm, job = start(lab, CASES[name], "target", "stop", EIO)
    assert until(lambda: job.stopped_on_error)
    with pytest.raises(qb.JobError) as caught:
        job.cancel()
    assert str(caught.value) == (
        "cannot cancel job 'job0' while it is paused: QEMU stopped it on an I/O error, and QEMU cancels a paused "
        "job only when forced; call job.cancel(force=True), or job.resume() first."
    )
    assert "block-job-cancel" not in set(vm.history["command"]), "refused before anything was sent"
    monitor = JobMonitor(job, plot=False)
    try:
        monitor.press("cancel")  # the button forces it: giving up is what Cancel means here
        job.wait(timeout=30)
    finally:
        monitor.close()
    assert job.outcome == "cancelled" and "BLOCK_JOB_CANCELLED" in set(job.events["event"])
    assert on_disk(lab, vm) == SEED and guest_reads(vm, "ABCD"), (
        "a cancelled job leaves the chain and data as they were"
    )


def test_resume_is_refused_for_a_job_that_only_met_an_ignored_error(lab):
    vm, job = start(lab, CASES["mirror"], "target", "ignore", EIO)
    job.wait_ready(timeout=30)
    assert job.io_error == "write error, ignored" and not job.stopped_on_error
    with pytest.raises(qb.JobError, match="cannot resume job 'job0': it was not paused"):
        job.resume()
    job.complete().wait(timeout=30)
    assert on_disk(lab, vm, "e.qcow2") == ["e.qcow2"] and guest_reads(vm, "ABCD")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"operation": "flush"}, "a fault on 'flush' cannot be injected: blkdebug fails data reads or writes"),
        ({"errno": 0}, "errno 0 is not an error number"),
        ({"sector": -1}, "sector -1 is not a sector of the file"),
    ],
)
def test_a_fault_that_blkdebug_cannot_inject_is_a_sentence(arguments, message):
    with pytest.raises(qb.InputError, match=message):
        Fault(**arguments)


def test_the_live_chain_over_a_reopened_blkdebug_layer(lab):
    """QEMU names a layer over blkdebug, and after a reopen its overlay too, with ``json:`` names whose keys come
    in another order in the overlay's backing name: the live chain still follows them."""
    vm, job = start(lab, CASES["commit"], "target", "ignore", EIO)
    job.wait(timeout=30)
    assert on_disk(lab, vm) == ["a.qcow2", "b.qcow2", "d.qcow2"]
    assert [image.node_name for image in vm.chain().images] == ["node-A", "node-B", "node-D"]
    assert str(vm.chain()) == "[a.qcow2] <-- [b.qcow2 (blkdebug)] <-- [d.qcow2]"


def test_a_guest_read_that_fails_is_an_error_not_a_match(lab):
    """A read that QEMU fails with EIO says so; it is neither a match nor a mismatch."""
    lab.create("a.qcow2", size="4M")
    lab.create("b.qcow2", backing="a.qcow2")
    lab.write("b.qcow2", 0, "1M", pattern=0xEE)
    vm = lab.launch("a.qcow2")
    faults.add_overlay(vm, "b.qcow2", "node-B", Fault("read", once=True))
    with pytest.raises(qb.Error, match=r"read failed: Input/output error; an image below the device"):
        vm.read_matches(vm.device, 0, "1M", 0xEE)
    assert vm.read_matches(vm.device, 0, "1M", 0xEE), "the fault fired once: the same read now finds B's data"
    assert not vm.read_matches(vm.device, 0, "1M", 0x11)
