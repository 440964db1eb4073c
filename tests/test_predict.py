"""Predictions of what a command does to the chain, checked against what QEMU then really does."""

from __future__ import annotations

import pytest

import qblocknb as qb
from qblocknb.model.chain import Chain, Image
from qblocknb.model.predict import predict
from qblocknb.teaching.seedchain import expected_view

MiB = 1 << 20


def hand_chain() -> Chain:
    def image(letter, below=None, **extra):
        backing = f"{below}.qcow2" if below else None
        return Image(
            f"{letter}.qcow2", "qcow2", 64 * MiB, node_name=f"node-{letter.upper()}", backing_file=backing, **extra
        )

    other = Image("e.qcow2", "qcow2", 64 * MiB, node_name="node-E")
    images = (image("a"), image("b", "a"), image("c", "b"), image("d", "c", device="virtio0"))
    return Chain(images, device="virtio0", other_nodes=(other,))


@pytest.mark.parametrize(
    ("command", "arguments", "message"),
    [
        ("block-commit", {"device": "node-B", "top-node": "node-B"}, "not the active layer"),
        ("drive-mirror", {"device": "node-C", "target": "m.qcow2", "sync": "full"}, "QEMU wants the root node"),
        ("blockdev-snapshot-sync", {"node-name": "node-B", "snapshot-file": "x.qcow2"}, "only on the top"),
        ("blockdev-snapshot-sync", {"node-name": "node-D", "snapshot-file": "c.qcow2"}, "already open as node-C"),
        (
            "blockdev-snapshot-sync",
            {"node-name": "node-D", "snapshot-file": "x.qcow2", "snapshot-node-name": "node-E"},
            "'node-E' is already taken",
        ),
        ("block-stream", {"device": "node-X"}, "'node-X' is not in the chain"),
        ("blockdev-backup", {"device": "node-D", "target": "node-Z", "sync": "full"}, "does not exist"),
        ("block-stream", {"device": "node-D", "job-id": "job3"}, "already in use"),
    ],
)
def test_bad_arguments_are_refused_with_a_sentence(command, arguments, message):
    with pytest.raises(qb.InputError, match=message):
        predict(hand_chain(), command, arguments, running_jobs={"job3"})


def test_a_blockdev_mirror_to_an_added_node_shows_it_outside_the_chain_while_it_runs():
    prediction = predict(hand_chain(), "blockdev-mirror", {"device": "node-D", "target": "node-E", "sync": "full"})
    assert [t.node_name for t in prediction.during.targets] == ["node-E"]
    assert (prediction.during.jobs[0].source, prediction.during.jobs[0].target) == ("node-D", "node-E")
    assert str(prediction.after) == "[e.qcow2]"
    assert [r.name for r in prediction.after.retired] == ["a.qcow2", "b.qcow2", "c.qcow2", "d.qcow2"]


def test_sync_none_starts_the_mirror_as_an_overlay():
    after = predict(hand_chain(), "drive-mirror", {"device": "node-D", "target": "m.qcow2", "sync": "none"}).after
    assert str(after) == "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2] <-- [m.qcow2]"
    assert after.active.device == "virtio0" and after.images[-2].device is None


def _run(vm: qb.Machine, command: str, arguments: dict):
    """Predict, send, finish the job (pivoting where needed) and compare the prediction with QEMU's chain."""
    before = vm.chain()
    prediction = predict(before, command, arguments, cwd=vm.cwd)
    slow = {"speed": 64 << 10} if prediction.during is not None else {}  # slow enough to see it run
    result = vm.execute(command, {**arguments, **slow})
    if isinstance(result, qb.Job):
        live = vm.chain().jobs
        assert [(j.source, j.target) for j in live] == [(j.source, j.target) for j in prediction.during.jobs]
        result.set_speed(0)
        if "block-job-complete" in prediction.note:
            result.wait_ready()
            result.complete()
        result.wait()
    after = vm.chain()
    assert str(after) == str(prediction.after)
    assert after.active.device == prediction.after.active.device == "virtio0"
    assert [(r.name, r.valid) for r in after.retired] == [(r.name, r.valid) for r in prediction.after.retired]
    assert vm.verify(expected_view("ABCD"))
    return prediction


def test_predictions_match_qemu_for_every_seed_command(seed_vm, lab):
    vm = seed_vm
    _run(
        vm,
        "blockdev-snapshot-sync",
        {"node-name": "node-D", "snapshot-file": "e.qcow2", "snapshot-node-name": "node-E"},
    )
    _run(vm, "block-stream", {"device": "node-E", "base-node": "node-B", "job-id": "job0"})
    _run(vm, "block-commit", {"device": "node-E", "top-node": "node-B", "base-node": "node-A", "job-id": "job1"})
    _run(
        vm,
        "blockdev-snapshot-sync",
        {"node-name": "node-E", "snapshot-file": "f.qcow2", "snapshot-node-name": "node-F"},
    )
    _run(vm, "block-commit", {"device": "node-F", "top-node": "node-F", "base-node": "node-E", "job-id": "job2"})
    assert str(vm.chain()) == "[a.qcow2] <-- [e.qcow2]"
    _run(
        vm,
        "drive-mirror",
        {"device": "node-E", "target": "m.qcow2", "node-name": "node-M", "sync": "top", "job-id": "job3"},
    )
    assert str(vm.chain()) == "[a.qcow2] <-- [m.qcow2]"
    _run(
        vm,
        "drive-mirror",
        {"device": "node-M", "target": "n.qcow2", "node-name": "node-N", "sync": "full", "job-id": "job4"},
    )
    prediction = _run(vm, "drive-backup", {"device": "node-N", "target": "k.qcow2", "sync": "full", "job-id": "job5"})
    assert [t.name for t in prediction.after.targets] == ["k.qcow2"]
    assert vm.compare("k.qcow2")
