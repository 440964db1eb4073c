"""Model-based random testing: random sequences of live block operations on a real QEMU, checked step by step.

Hypothesis draws lists of guest writes, snapshots, streams (each of the seed's cases), commits (intermediate;
active, then complete or cancel after READY), mirrors (full or top, complete or cancel after READY) and full
backups, some with a guest write while READY or while the backup runs; ``random_sequences.Sequence`` runs them on
a fresh QEMU and on ``reference_model.Model`` and compares, after every step, the chain (QEMU's and on disk), what
the guest reads and each copy made, and at the end every image made. A failing sequence shrinks to a minimal one,
printed as the toolkit calls that reproduce it. The examples are derandomized, so CI runs the same ones every
time; ``make soak`` runs many more (``tools/soak.py``, figures in docs/reliability.md).
"""

from __future__ import annotations

import pytest
import reference_model
from hypothesis import HealthCheck, example, given, settings
from random_sequences import (
    Backup,
    Commit,
    Mirror,
    Snapshot,
    Stats,
    Stream,
    Write,
    run_sequence,
    seed_layers,
    sequences,
)
from reference_model import Model, runs

from qblocknb.live import guestimage
from qblocknb.teaching.seedchain import LAYERS, MiB, expected_view

# Each example launches its own QEMU; slow examples are expected, and the same ones run every time.
REPRODUCIBLE = settings(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# Besides the drawn sequences, one that runs every kind of operation at least once, from the seed's chain.
EVERY_KIND = [
    *seed_layers(3),
    Stream(False, 0, 0),  # an intermediate one, with a base
    Stream(True, 0, 0),  # the top, with a base
    Snapshot(),
    Write(40, 8, 0x5A),
    Commit(False, 0, 0),
    Snapshot(),
    Commit(True, 0, 1, "cancel", Write(0, 4, 0x6B)),
    Mirror("top", "cancel", Write(20, 2, 0x7C)),
    Backup(Write(60, 8, 0x8D)),
    Stream(False, 0, None),  # an intermediate one, without a base
    Snapshot(),
    Snapshot(),
    Stream(True, 0, None),  # the top, without a base
    Snapshot(),
    Commit(True, 0, 0, "complete", Write(100, 16, 0x9E)),
    Mirror("full", "cancel", None),
    Snapshot(),
    Mirror("top", "complete", Write(7, 1, 0xAF)),
    Mirror("full", "complete", Write(127, 1, 0xB0)),
]
KINDS = [
    "write",
    "snapshot",
    *(f"stream ({where}, {base})" for where in ("top", "intermediate") for base in ("base", "no base")),
    "commit (intermediate)",
    "commit (active, complete)",
    "commit (active, cancel)",
    *(f"mirror ({sync}, {verb})" for sync in ("full", "top") for verb in ("complete", "cancel")),
    "backup (full)",
]
GUEST_JOBS = [
    *seed_layers(2),
    Commit(True, 0, 0, "cancel", Write(0, 4, 0x6B)),
    Stream(False, 0, None),
    Mirror("top", "complete", None),
    Backup(Write(60, 8, 0x8D)),
    Commit(True, 0, 0, "complete", None),
]


@settings(REPRODUCIBLE, max_examples=60)
@given(ops=sequences())
def test_random_sequences_match_the_model(ops, tmp_path_factory):
    run_sequence(ops, tmp_path_factory.mktemp("sequence") / "lab")


def test_one_sequence_runs_every_kind_of_operation(tmp_path):
    """Whatever hypothesis draws, each kind of operation (the seed's four streams, three commits, four mirrors, a
    backup, snapshots and writes) runs at least once in make test, checked like the drawn ones."""
    stats = Stats()
    run_sequence(EVERY_KIND, tmp_path / "lab", stats=stats)
    assert stats.passed_over == 0 and stats.sequences == 1
    assert sorted(stats.operations) == sorted(KINDS)


@settings(REPRODUCIBLE, max_examples=2)
@given(ops=sequences(max_size=6, writes=False))
@example(ops=GUEST_JOBS)
def test_random_job_sequences_under_the_guest_writer(ops, tmp_path_factory):
    """The tiny Linux writes and checks its own records throughout; the chain and the rest of the disk follow the
    model."""
    try:
        guestimage.boot_files()
    except guestimage.GuestImageError as error:
        pytest.skip(f"no guest OS here: {error}")
    run_sequence(ops, tmp_path_factory.mktemp("guest-sequence") / "lab", guest=True)


# -- the checks can fail, and the model agrees with the seed ----------------------------------------------------------
def test_a_wrong_model_is_caught_with_a_reproducer(tmp_path, monkeypatch):
    """A model that forgets what an intermediate commit writes into the base fails at that step, with its script."""
    right = Model.commit

    def forgetful(self, top, base, pivot=True):
        right(self, top, base, pivot)
        self.chain[base].clusters.pop(0, None)

    monkeypatch.setattr(reference_model.Model, "commit", forgetful)
    ops = [Snapshot(), Write(0, 2, 0x22), Snapshot(), Commit(active=False, top=0, base=0)]
    with pytest.raises(AssertionError) as failure:
        run_sequence(ops, tmp_path / "lab")
    message = str(failure.value)
    assert message.startswith("step 4 (Commit(")
    assert "the guest does not read as the model says: clusters 0-0 should be 0x00" in message
    assert message.splitlines()[-2:] == [
        "job = vm.block_commit(job_id='job1', device='node-2', top_node='node-1', base_node='node-0')",
        "job.wait(timeout=60)",
    ]


def seed_model() -> Model:
    """The seed's chain in the model: A's 4 MiB, then B, C and D each over one MiB of it."""
    per_mib = MiB // reference_model.CLUSTER
    model = Model(clusters=8 * per_mib, base={})
    for index, layer in enumerate(LAYERS):
        if index:
            model.snapshot()
        model.write(layer.offset // reference_model.CLUSTER, layer.length // reference_model.CLUSTER, layer.pattern)
    return model


def seed_runs(model: Model) -> list[tuple[int, int, int]]:
    return runs(model.view(), end=4 * MiB // reference_model.CLUSTER)


def test_the_model_reads_the_seed_chain_as_the_seed_says():
    model = seed_model()
    assert str(model) == "[img0.qcow2] <-- [img1.qcow2] <-- [img2.qcow2] <-- [img3.qcow2]"
    assert seed_runs(model) == expected_view("ABCD")


@pytest.mark.parametrize(
    ("operation", "chain"),
    [
        (lambda m: m.stream(3, None), "[img3.qcow2]"),
        (lambda m: m.stream(3, 0), "[img0.qcow2] <-- [img3.qcow2]"),
        (lambda m: m.stream(2, 0), "[img0.qcow2] <-- [img2.qcow2] <-- [img3.qcow2]"),
        (lambda m: m.commit(1, 0), "[img0.qcow2] <-- [img2.qcow2] <-- [img3.qcow2]"),
        (lambda m: m.commit(3, 0), "[img0.qcow2]"),
        (lambda m: m.commit(3, 1, pivot=False), "[img0.qcow2] <-- [img1.qcow2] <-- [img2.qcow2] <-- [img3.qcow2]"),
        (lambda m: m.mirror("full", pivot=True), "[img4.qcow2]"),
        (lambda m: m.mirror("top", pivot=True), "[img0.qcow2] <-- [img1.qcow2] <-- [img2.qcow2] <-- [img4.qcow2]"),
    ],
)
def test_the_models_operations_keep_the_view(operation, chain):
    model = seed_model()
    operation(model)
    assert str(model) == chain
    assert seed_runs(model) == expected_view("ABCD")


def test_the_model_keeps_points_in_time():
    """Backup and a cancelled mirror copy the view of their moment; a streamed-out image keeps its own."""
    model = seed_model()
    backup = model.backup()
    model.write(0, 1, 0x5A)
    assert runs(backup.view(model.clusters), end=64) == expected_view("ABCD")
    retired_b = model.chain[1]
    model.stream(3, None)
    assert runs(retired_b.view(model.clusters), end=64) == expected_view("AB")
    copy = model.mirror("top", pivot=False)
    assert copy.view(model.clusters) == model.view() and copy.backing is None
