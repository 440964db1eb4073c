"""block-stream, the seed's three cases: data copied up from backing files, chain shortened."""

from __future__ import annotations

import pytest

from qblocknb.teaching.seedchain import expected_view

CASES = [
    # (seed case, arguments, resulting chain, image holding the guest view, retired files)
    (1, {"device": "node-D"}, "[d.qcow2]", ["a.qcow2", "b.qcow2", "c.qcow2"]),
    (2, {"device": "node-D", "base_node": "node-A"}, "[a.qcow2] <-- [d.qcow2]", ["b.qcow2", "c.qcow2"]),
    (3, {"device": "node-C", "base_node": "node-A"}, "[a.qcow2] <-- [c.qcow2] <-- [d.qcow2]", ["b.qcow2"]),
]


@pytest.mark.parametrize(("case", "arguments", "result", "retired"), CASES, ids=[f"case{c[0]}" for c in CASES])
def test_stream_case(seed_vm, lab, case, arguments, result, retired):
    job = seed_vm.block_stream(job_id="job0", **arguments)
    job.wait(timeout=60)
    assert job.outcome == "completed"
    assert list(job.events["event"]).count("BLOCK_JOB_COMPLETED") == 1

    chain = seed_vm.chain()
    assert str(chain) == result
    assert seed_vm.verify(expected_view("ABCD")), "the guest view must not change"
    assert str(lab.chain("d.qcow2")) == result, "the chain on disk must match QEMU's"

    assert [r.name for r in seed_vm.retired] == retired
    assert all(r.valid and "still valid" in r.note for r in seed_vm.retired)
    # Streamed-out images stay a valid point in time: B still reads as it did when C was created.
    if "b.qcow2" in retired:
        assert all(lab.read_matches("b.qcow2", *run) for run in expected_view("AB"))
    if case == 3:
        # C now holds B's data and points at A: C alone over A reads the "ABC" point in time.
        assert lab.chain("c.qcow2").base.name == "a.qcow2"
        assert all(lab.read_matches("c.qcow2", *run) for run in expected_view("ABC"))


def test_stream_by_qmp_shell_line(seed_vm):
    job = seed_vm.shell("block-stream device=node-D job-id=job0")
    assert job.wait(timeout=60).outcome == "completed"
    assert str(seed_vm.chain()) == "[d.qcow2]"
    assert seed_vm.verify(expected_view("ABCD"))
    assert seed_vm.history["command"].iloc[-1] == "block-stream"
    assert seed_vm.history["arguments"].iloc[-1] == {"device": "node-D", "job-id": "job0"}
