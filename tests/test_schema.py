"""What a QEMU's schema costs: the seed's workflow never reads it, and a process reads it once per QEMU build."""

from __future__ import annotations

import pytest

import qblocknb as qb
from qblocknb.live import schema


def counted(vm: qb.Machine, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The commands this Machine's session sends from now on, quiet ones included."""
    sent: list[str] = []
    execute = vm.session.execute

    def recording(command, arguments=None, **options):
        sent.append(command)
        return execute(command, arguments, **options)

    monkeypatch.setattr(vm.session, "execute", recording)
    return sent


def test_the_seed_workflow_reads_no_schema_and_a_build_is_read_once(lab, monkeypatch):
    monkeypatch.setattr(schema, "_READ", {})
    lab.create("a.qcow2", size="16M")
    first = lab.launch("a.qcow2", node_name="node-A", name="first")
    sent = counted(first, monkeypatch)
    first.blockdev_snapshot_sync(
        node_name="node-A", snapshot_file="b.qcow2", snapshot_node_name="node-B", format="qcow2"
    )
    first.block_stream(device="node-B", job_id="job0").wait(timeout=30)
    assert "query-qmp-schema" not in sent, "only arguments every QEMU takes: no schema needed"
    assert str(first.chain()) == "[b.qcow2]"

    with pytest.raises(qb.InputError, match="argument 'no-such' is not one this QEMU knows"):
        first.block_stream(device="node-B", no_such=1)
    assert sent.count("query-qmp-schema") == 1, "an unknown argument is checked against the QEMU's own schema"

    lab.create("c.qcow2", size="16M")
    second = lab.launch("c.qcow2", node_name="node-C", name="second")
    again = counted(second, monkeypatch)
    with pytest.raises(qb.InputError, match="argument 'no-such'"):
        second.block_stream(device="node-C", no_such=1)
    assert "query-qmp-schema" not in again, "the same QEMU build: its schema is read once per process"
    assert second.deprecated("block-job-complete") == first.deprecated("block-job-complete")
