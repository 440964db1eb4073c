"""Random sequences of live block operations, run on a real QEMU and on the reference model side by side.

An operation is drawn as plain data (``Write``, ``Snapshot``, ``Stream``, ``Commit``, ``Mirror``, ``Backup``) whose
numbers pick images by position in whatever chain exists when it runs, so that any list of them is a valid
sequence and hypothesis can shrink a failing one by dropping and simplifying operations; one that does not fit the
chain of the moment (a commit on a single image) is passed over. ``Sequence.run`` makes each operation a toolkit
call, applies it to the model, and after every step compares the chain (QEMU's and the one on disk), the guest's
view, and any copy just made (backup and cancelled-mirror targets) with the model; at the end, every image the
sequence made, in the chain or not, must read as the model says through its own backing chain. The toolkit calls
are kept as a script: a failure prints it, a reproducer that runs as it stands.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from reference_model import CLUSTER, Image, Model, notation, runs

import qblocknb as qb

CLUSTERS = 128  # an 8 MiB disk
BASE = {index: 0xA1 for index in range(64)}  # the base image's first 4 MiB, written before QEMU starts
WAIT = 60  # seconds: a bound on each wait, never a measure
# With a guest OS, its writer fills the last 2 MiB with numbered, checksummed records (1.25 MiB/s) and checks them
# itself; the model's writes and checks keep to the clusters before it.
WRITER = {"size": "2M", "record": "64k", "offset": "6M", "rate": 20}
GUEST_CLUSTERS = 96
GUEST_SPEED = 2 << 20  # jobs throttled under the guest, so that it writes while each runs


# -- the operations, as data ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Write:
    """A guest write of ``count`` clusters from cluster ``first``."""

    first: int
    count: int
    pattern: int


@dataclass(frozen=True)
class Snapshot:
    """``blockdev-snapshot-sync`` of the active image."""


@dataclass(frozen=True)
class Stream:
    """``block-stream`` into the active image or an intermediate one (``device`` picks which); ``base`` picks an
    image below it, or there is none."""

    active: bool
    device: int
    base: int | None


@dataclass(frozen=True)
class Commit:
    """``block-commit``: of an intermediate image, or of the active one, ended with ``verb`` after READY."""

    active: bool
    top: int
    base: int
    verb: str = "complete"
    write: Write | None = None  # a guest write while READY (active commit only)


@dataclass(frozen=True)
class Mirror:
    """``drive-mirror`` to a new image, ended with ``verb`` after READY."""

    sync: str
    verb: str
    write: Write | None = None  # a guest write while READY


@dataclass(frozen=True)
class Backup:
    """``drive-backup sync=full`` to a new image; ``write`` lands while it runs (throttled)."""

    write: Write | None = None


Operation = Write | Snapshot | Stream | Commit | Mirror | Backup


def operations(clusters: int, writes: bool = True) -> st.SearchStrategy[Operation]:
    """Any one operation, with guest writes within the first ``clusters`` clusters.

    Writes and snapshots come first (hypothesis shrinks towards the first choices) and more often, so that chains
    grow and hold data before the jobs reshape them.
    """
    write = st.builds(Write, st.integers(0, clusters - 1), st.integers(1, 16), st.integers(1, 255))  # 64k-1M
    during = st.none() | write
    verbs = st.sampled_from(["complete", "cancel"])
    picks = st.integers(0, 7)
    snapshot = st.just(Snapshot())
    jobs = [
        st.builds(Stream, st.booleans(), picks, st.none() | picks),
        st.builds(Commit, st.just(False), picks, picks),
        st.builds(Commit, st.just(True), picks, picks, verbs, during),
        st.builds(Mirror, st.sampled_from(["full", "top"]), verbs, during),
        st.builds(Backup, during),
    ]
    growth = [write, snapshot, write, snapshot, snapshot] if writes else [snapshot]
    return st.one_of(*growth, *jobs)


def seed_layers(depth: int) -> list[Operation]:
    """Overlays like the seed's B, C and D: a snapshot, then a guest write of one MiB at MiB 1, 2 or 3."""
    return [op for k in range(1, depth + 1) for op in (Snapshot(), Write(16 * k, 16, 0xA1 + 0x11 * k))]


def sequences(clusters: int = CLUSTERS, max_size: int = 16, writes: bool = True) -> st.SearchStrategy[list]:
    """A chain of 1 to 4 images like the seed's to start from, then random operations (shrinking to fewer of both)."""
    ops = st.lists(operations(clusters, writes), min_size=1, max_size=max_size)
    return st.builds(lambda depth, rest: seed_layers(depth) + rest, st.integers(0, 3), ops)


# -- what a run found -----------------------------------------------------------------------------------------------
@dataclass
class Stats:
    """Figures over every sequence run in this process (the soak prints them)."""

    sequences: int = 0
    operations: Counter = field(default_factory=Counter)
    passed_over: int = 0
    bytes_verified: int = 0
    writer_records_written: int = 0


STATS = Stats()


def shown(value: Any, name: str = "") -> str:
    return f"{value:#04x}" if name == "pattern" else repr(value)


# -- one sequence on a real QEMU --------------------------------------------------------------------------------------
class Sequence:
    """One QEMU, one model, the toolkit calls made so far; ``run`` applies operations and checks each step."""

    def __init__(self, folder: Path, clusters: int = CLUSTERS, guest: bool = False, stats: Stats = STATS) -> None:
        self.folder, self.data, self.guest, self.stats = folder, clusters, guest, stats
        self.model = Model(CLUSTERS, {i: p for i, p in BASE.items() if i < clusters})
        self.script: list[str] = ["import qblocknb as qb", "lab = qb.Lab()"]
        self.jobs = 0
        self.step = "setting up"
        self.lab = qb.Lab(folder)
        base = self.model.top
        self.record("lab", self.lab, "create", base.file, size=CLUSTERS * CLUSTER)
        for offset, length, pattern in runs(base.view(CLUSTERS)):
            if pattern:
                self.record("lab", self.lab, "write", base.file, offset, length, pattern=pattern)
        self.vm = self.record("lab", self.lab, "launch", base.file, node_name=base.node, guest=guest)
        self.script[-1] = f"vm = {self.script[-1]}"
        if guest:
            self.record("vm.guest", self.vm.guest, "start_writer", **WRITER)

    def close(self) -> None:
        self.lab.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def record(self, name: str, obj: Any, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call ``obj.method(...)`` and keep the call, as ``name.method(...)``, as a line of the reproducer."""
        words = [shown(a) for a in args] + [f"{k}={shown(v, k)}" for k, v in kwargs.items()]
        self.script.append(f"{name}.{method}({', '.join(words)})")
        return getattr(obj, method)(*args, **kwargs)

    def job(self, method: str, **kwargs: Any) -> qb.Job:
        self.jobs += 1
        throttle = {"speed": GUEST_SPEED} if self.guest else {}
        job = self.record("vm", self.vm, method, job_id=f"job{self.jobs}", **{**throttle, **kwargs})
        self.script[-1] = f"job = {self.script[-1]}"
        return job

    def failure(self, what: str) -> str:
        return f"{self.step}: {what}\n--- reproducer ---\n" + "\n".join(self.script)

    # -- running ------------------------------------------------------------------------------------------------
    def run(self, ops: list[Operation]) -> None:
        for number, op in enumerate(ops, 1):
            self.step = f"step {number} ({op})"
            try:
                kind, copy = APPLY[type(op)](self, op)
            except qb.Error as error:  # a refusal, a failed job, a timeout: reported with the calls that led there
                raise AssertionError(self.failure(f"{type(error).__name__}: {error}")) from error
            if kind is None:
                self.stats.passed_over += 1
                continue
            self.stats.operations[kind] += 1
            self.check_chain()
            self.check_view()
            if copy is not None:
                self.check_image(copy)
        self.step = "at the end"
        if self.guest:
            self.stop_writer()
        self.audit()
        self.stats.sequences += 1

    def write(self, op: Write) -> None:
        count = min(op.count, self.data - op.first)
        self.record("vm", self.vm, "write", "virtio0", op.first * CLUSTER, count * CLUSTER, pattern=op.pattern)
        self.model.write(op.first, count, op.pattern)

    def finish(self, job: qb.Job, verb: str | None = None, write: Write | None = None) -> None:
        """Wait for the job's end; with ``verb``, first for READY, then a guest write if any, then the verb."""
        if verb is not None:
            self.record("job", job, "wait_ready", timeout=WAIT)
            if write is not None:
                self.write(write)
            self.record("job", job, verb)
        self.record("job", job, "wait", timeout=WAIT)
        assert job.outcome == "completed", self.failure(f"{job.id} ended {job.outcome}: {job.error}")

    # -- checks -------------------------------------------------------------------------------------------------
    def check_chain(self) -> None:
        chain, model = self.vm.chain(), str(self.model)
        assert str(chain) == model, self.failure(f"QEMU's chain is {chain}, the model's {model}")
        assert chain.active.device == "virtio0", self.failure(f"the device is not on {chain.active.name}")
        on_disk = self.lab.chain(self.model.top.file)
        assert str(on_disk) == model, self.failure(f"the chain on disk is {on_disk}, the model's {model}")

    def check_view(self) -> None:
        expected = runs(self.model.view(), end=self.data)
        if not self.vm.verify(expected):
            raise AssertionError(self.failure(self.differences(self.model.top.file, expected, "the guest")))
        self.stats.bytes_verified += self.data * CLUSTER

    def check_image(self, image: Image) -> None:
        """An image read on its own, through its backing chain on disk, is what the model says it is."""
        on_disk, model = self.lab.chain(image.file), notation(image.chain())
        assert str(on_disk) == model, self.failure(f"{image.file}'s chain on disk is {on_disk}, the model's {model}")
        expected = runs(image.view(CLUSTERS), end=self.data)
        if not self.lab.runs_match(image.file, expected):
            raise AssertionError(self.failure(self.differences(image.file, expected, image.file)))
        self.stats.bytes_verified += self.data * CLUSTER

    def differences(self, file: str, expected: list[tuple[int, int, int]], who: str) -> str:
        wrong = [run for run in expected if not self.lab.runs_match(file, [run])]
        where = ", ".join(f"{o // CLUSTER}-{(o + n) // CLUSTER - 1} should be {p:#04x}" for o, n, p in wrong)
        return f"{who} does not read as the model says: clusters {where}"

    def stop_writer(self) -> None:
        """The guest reads back every record its writer wrote through all the sequence's jobs: all must hold."""
        report = self.record("vm.guest", self.vm.guest, "stop_writer")
        assert report.ok, self.failure(f"the guest's writer found its data damaged: {report}")
        assert report.records_checked > 0, self.failure(f"the guest's writer checked nothing: {report}")
        self.stats.writer_records_written += report.records_written

    def audit(self) -> None:
        """Every image made, in the chain or left by it, reads as the model says (QEMU's caches flushed first)."""
        self.vm.flush()
        for image in self.model.images:
            self.check_image(image)


# -- each operation: the toolkit's calls and the model's change; None when it does not fit the chain -------------------
Applied = tuple[str | None, Image | None]


def apply_write(seq: Sequence, op: Write) -> Applied:
    seq.write(op)
    return "write", None


def apply_snapshot(seq: Sequence, op: Snapshot) -> Applied:
    below, new = seq.model.top, seq.model.snapshot()
    seq.record(
        "vm",
        seq.vm,
        "blockdev_snapshot_sync",
        node_name=below.node,
        snapshot_file=new.file,
        snapshot_node_name=new.node,
        format="qcow2",
    )
    return "snapshot", None


def apply_stream(seq: Sequence, op: Stream) -> Applied:
    chain = seq.model.chain
    if len(chain) < (2 if op.active else 3):
        return None, None
    # An intermediate image counted from the top, so that the first picks leave images below it for a base.
    device = len(chain) - 1 if op.active else len(chain) - 2 - op.device % (len(chain) - 2)
    base = None if op.base is None or device < 2 else op.base % (device - 1)
    extra = {} if base is None else {"base_node": chain[base].node}
    seq.finish(seq.job("block_stream", device=chain[device].node, **extra))
    seq.model.stream(device, base)
    return f"stream ({'top' if op.active else 'intermediate'}, {'no base' if base is None else 'base'})", None


def apply_commit(seq: Sequence, op: Commit) -> Applied:
    chain = seq.model.chain
    if len(chain) < (2 if op.active else 3):
        return None, None
    top = len(chain) - 1 if op.active else 1 + op.top % (len(chain) - 2)
    base = op.base % top
    verb = op.verb if op.active else None
    job = seq.job("block_commit", device=chain[-1].node, top_node=chain[top].node, base_node=chain[base].node)
    seq.finish(job, verb, op.write if op.active else None)
    seq.model.commit(top, base, pivot=verb != "cancel")
    return ("commit (active, " + op.verb + ")" if op.active else "commit (intermediate)"), None


def apply_mirror(seq: Sequence, op: Mirror) -> Applied:
    source, file, node = seq.model.top.node, *seq.model.next_names()
    job = seq.job("drive_mirror", device=source, target=file, format="qcow2", sync=op.sync, node_name=node)
    seq.finish(job, op.verb, op.write)
    copy = seq.model.mirror(op.sync, pivot=op.verb == "complete")
    return f"mirror ({op.sync}, {op.verb})", copy if op.verb == "cancel" else None


def apply_backup(seq: Sequence, op: Backup) -> Applied:
    source, file, _ = seq.model.top.node, *seq.model.next_names()
    throttle = {"speed": CLUSTER} if op.write is not None else {}
    job = seq.job("drive_backup", device=source, target=file, format="qcow2", sync="full", **throttle)
    copy = seq.model.backup()  # the disk as it is when the job starts
    if op.write is not None:
        seq.write(op.write)
        seq.record("job", job, "set_speed", 0)
    seq.finish(job)
    return "backup (full)", copy


APPLY: dict[type, Callable[[Sequence, Any], Applied]] = {
    Write: apply_write,
    Snapshot: apply_snapshot,
    Stream: apply_stream,
    Commit: apply_commit,
    Mirror: apply_mirror,
    Backup: apply_backup,
}


def run_sequence(ops: list[Operation], folder: Path, guest: bool = False, stats: Stats = STATS) -> None:
    """One sequence on a fresh QEMU, every step checked against the model; ``guest`` boots the tiny Linux, whose
    writer runs throughout."""
    sequence = Sequence(folder, GUEST_CLUSTERS if guest else CLUSTERS, guest, stats)
    try:
        sequence.run(ops)
    finally:
        sequence.close()
