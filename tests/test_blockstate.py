"""The chain is read once per change: cached until a command, an event or MAX_AGE, and never stale after that."""

from __future__ import annotations

import time

import qblocknb as qb
from qblocknb.live import blockstate
from qblocknb.teaching.seedchain import expected_view

SEED = "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]"


def counting_reads(vm: qb.Machine) -> list[str]:
    """Count the node-list queries the machine sends (the transport is wrapped, QEMU is real)."""
    sent: list[str] = []
    real = vm.session.execute_async

    async def counted(command, arguments=None):
        sent.append(command)
        return await real(command, arguments)

    vm.session.execute_async = counted
    return sent


def test_reads_are_shared_until_something_changes(seed_vm):
    sent = counting_reads(seed_vm)
    seed_vm.hmp("info version")  # any command but a query-* may change the graph: the next read asks
    assert str(seed_vm.chain()) == SEED and str(seed_vm.chain()) == SEED
    assert sent.count("query-named-block-nodes") == 1, "two reads with no change between them ask QEMU once"
    seed_vm.write("virtio0", "5M", "64k", pattern=0x55)  # an HMP command: anything may have changed
    seed_vm.chain()
    assert sent.count("query-named-block-nodes") == 2


def test_a_snapshot_checks_the_next_command_without_asking(seed_vm, lab):
    sent = counting_reads(seed_vm)
    seed_vm.blockdev_snapshot_sync(node_name="node-D", snapshot_file="e.qcow2", snapshot_node_name="node-E")
    reads = sent.count("query-named-block-nodes")
    seed_vm.blockdev_snapshot_sync(node_name="node-E", snapshot_file="f.qcow2", snapshot_node_name="node-F")
    assert sent.count("query-named-block-nodes") == reads, "the predicted chain was enough to check it"
    assert str(seed_vm.chain()) == f"{SEED} <-- [e.qcow2] <-- [f.qcow2]", "what is shown is read from QEMU"
    try:
        seed_vm.block_stream(device="node-X")
    except qb.InputError as error:
        assert "nodes are node-A, node-B, node-C, node-D, node-E, node-F" in str(error)
    else:
        raise AssertionError("a stream of an unknown node was sent")
    seed_vm.block_stream(device="node-F", base_node="node-D", job_id="job0").wait(timeout=60)
    assert str(seed_vm.chain()) == "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2] <-- [f.qcow2]"
    assert seed_vm.verify(expected_view("ABCD"))


def test_a_change_made_behind_the_machines_back_shows_within_max_age(seed_vm):
    seed_vm.chain()
    arguments = {"node-name": "node-D", "snapshot-file": "e.qcow2", "snapshot-node-name": "node-E"}
    seed_vm.session.execute("blockdev-snapshot-sync", arguments)  # as another QMP client would: no event
    time.sleep(blockstate.MAX_AGE)
    assert str(seed_vm.chain()) == f"{SEED} <-- [e.qcow2]"
