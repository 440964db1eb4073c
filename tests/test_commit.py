"""block-commit, the seed's five cases, including active commit with READY then complete or cancel."""

from __future__ import annotations

import pytest

from qblocknb.teaching.seedchain import expected_view

CASES = [
    # (seed case, arguments, resulting chain, base image and the point in time it must now hold)
    (1, {"top_node": "node-B", "base_node": "node-A"}, "[a.qcow2] <-- [c.qcow2] <-- [d.qcow2]", ("a.qcow2", "AB")),
    (2, {"top_node": "node-C", "base_node": "node-A"}, "[a.qcow2] <-- [d.qcow2]", ("a.qcow2", "ABC")),
    (4, {"top_node": "node-C", "base_node": "node-B"}, "[a.qcow2] <-- [b.qcow2] <-- [d.qcow2]", ("b.qcow2", "ABC")),
]


@pytest.mark.parametrize(("case", "arguments", "result", "base"), CASES, ids=[f"case{c[0]}" for c in CASES])
def test_intermediate_commit(seed_vm, lab, case, arguments, result, base):
    job = seed_vm.block_commit(device="node-D", job_id="job0", **arguments)
    job.wait(timeout=60)
    assert job.outcome == "completed" and not job.ready, "an intermediate commit ends by itself"

    assert str(seed_vm.chain()) == result
    assert str(lab.chain("d.qcow2")) == result
    assert seed_vm.verify(expected_view("ABCD"))
    image, point = base
    assert all(lab.read_matches(image, *run) for run in expected_view(point))
    assert seed_vm.retired and all(not r.valid and "invalid" in r.note for r in seed_vm.retired)


def test_commit_with_seed_file_names(seed_vm, lab):
    """The seed's own form: base=a.qcow2 top=b.qcow2 (file names instead of node names)."""
    job = seed_vm.shell("block-commit device=node-D base=a.qcow2 top=b.qcow2 job-id=job0")
    job.wait(timeout=60)
    assert str(seed_vm.chain()) == "[a.qcow2] <-- [c.qcow2] <-- [d.qcow2]"
    assert seed_vm.verify(expected_view("ABCD"))
    assert all(lab.read_matches("a.qcow2", *run) for run in expected_view("AB"))


@pytest.mark.parametrize(
    ("case", "base_node", "result", "base_file"),
    [(3, "node-A", "[a.qcow2]", "a.qcow2"), (5, "node-B", "[a.qcow2] <-- [b.qcow2]", "b.qcow2")],
    ids=["case3", "case5"],
)
def test_active_commit_ready_then_complete(seed_vm, lab, case, base_node, result, base_file):
    job = seed_vm.block_commit(device="node-D", top_node="node-D", base_node=base_node, job_id="job0")
    job.wait_ready(timeout=60)
    assert job.status == "ready"
    job.complete().wait(timeout=60)
    assert list(job.events["event"]).count("BLOCK_JOB_READY") == 1

    chain = seed_vm.chain()
    assert str(chain) == result
    assert chain.active.device == "virtio0", "the device now writes to the base"
    assert seed_vm.verify(expected_view("ABCD"))
    assert all(lab.read_matches(base_file, *run) for run in expected_view("ABCD"))
    # New guest writes land in the base now.
    seed_vm.write("virtio0", "8M", "64k", pattern=0x5A)
    assert seed_vm.verify([("8M", "64k", 0x5A)], image=lab.file(base_file))
    assert {r.name for r in seed_vm.retired} >= {"d.qcow2"} and not any(r.valid for r in seed_vm.retired)


def test_active_commit_ready_then_cancel_leaves_chain(seed_vm):
    job = seed_vm.block_commit(device="node-D", top_node="node-D", base_node="node-A", job_id="job0")
    job.wait_ready(timeout=60)
    job.cancel().wait(timeout=60)
    assert str(seed_vm.chain()) == "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]"
    assert seed_vm.chain().active.name == "d.qcow2"
    assert seed_vm.verify(expected_view("ABCD"))
    assert seed_vm.retired == []


def test_a_commit_ends_the_validity_of_images_streamed_out_above_its_base(seed_vm, lab):
    """Streamed-out images are points in time only while nothing writes into what they read through."""
    seed_vm.block_stream(device="node-C", base_node="node-A", job_id="stream").wait(timeout=60)
    assert [(r.name, r.valid) for r in seed_vm.retired] == [("b.qcow2", True)]
    assert lab.runs_match("b.qcow2", expected_view("AB"))

    job = seed_vm.block_commit(device="node-D", base_node="node-A", job_id="commit")
    job.wait_ready(timeout=60).complete().wait(timeout=60)
    assert str(seed_vm.chain()) == str(lab.chain("a.qcow2")) == "[a.qcow2]"
    assert seed_vm.verify(expected_view("ABCD"))
    b = next(r for r in seed_vm.retired if r.name == "b.qcow2")
    assert not b.valid and "commit wrote into a.qcow2" in b.note
    assert not lab.runs_match("b.qcow2", expected_view("AB")), "b.qcow2 really no longer reads as its point in time"
    assert {r.name: r.valid for r in seed_vm.retired} == {"b.qcow2": False, "c.qcow2": False, "d.qcow2": False}
