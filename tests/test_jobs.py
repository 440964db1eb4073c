"""Job lifecycle: timelines, event sequences, and verbs refused in the states where QEMU refuses them."""

from __future__ import annotations

import time

import pytest

import qblocknb as qb
from qblocknb.teaching.seedchain import expected_view


def wait_for_status(job: qb.Job, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while job.status != status:
        assert time.monotonic() < deadline, f"job stayed {job.status}, never {status}"
        time.sleep(0.01)


def test_speed_limited_job_has_a_timeline_and_the_whole_status_sequence(seed_vm):
    job = seed_vm.block_stream(device="node-D", job_id="job0", speed=2 << 20)
    job.wait(timeout=60)
    timeline = job.timeline
    assert len(timeline) >= 20, "a job of about a second is sampled often enough to draw a curve"
    assert timeline["offset"].is_monotonic_increasing
    assert timeline["t"].is_monotonic_increasing
    assert timeline["status"].iloc[-1] in ("concluded", "null") and timeline["offset"].iloc[-1] == job.length
    assert (timeline["speed"].iloc[:-1] == 2 << 20).all()
    wait_for_status(job, "null")  # wait() returns at the end (concluded); the dismissal's event may follow
    statuses = list(job.events["status"].dropna())
    assert statuses == ["created", "running", "waiting", "pending", "concluded", "null"]
    assert job.events["time"].is_monotonic_increasing
    assert seed_vm.verify(expected_view("ABCD"))
    row = seed_vm.jobs.iloc[0]
    assert row["id"] == "job0" and row["outcome"] == "completed" and row["bytes"] == job.length


def test_verbs_follow_qemus_state_rules(seed_vm, lab):
    job = seed_vm.drive_mirror(
        device="node-D", target="e.qcow2", sync="full", format="qcow2", job_id="job0", speed=64 << 10
    )
    wait_for_status(job, "running")
    with pytest.raises(qb.JobError, match="only once the job is ready"):
        job.complete()
    with pytest.raises(qb.JobError, match="concluded"):
        job.dismiss()
    with pytest.raises(qb.JobError, match="was not paused"):
        job.resume()
    job.pause()
    wait_for_status(job, "paused")
    with pytest.raises(qb.JobError, match="paused"):
        job.wait(timeout=30)
    job.resume()
    wait_for_status(job, "running")
    job.set_speed(0)
    job.wait_ready(timeout=60)
    with pytest.raises(qb.JobError, match="ready and will not end"):
        job.wait(timeout=30)
    job.complete().wait(timeout=60)
    with pytest.raises(qb.JobError, match="already ended"):
        job.cancel()
    assert str(seed_vm.chain()) == "[e.qcow2]"
    assert seed_vm.verify(expected_view("ABCD"))
    assert list(job.events["status"].dropna())[:4] == ["created", "running", "paused", "running"]


def test_manual_finalize_and_dismiss(seed_vm):
    job = seed_vm.block_stream(device="node-D", job_id="job0", auto_finalize=False, auto_dismiss=False)
    wait_for_status(job, "pending")
    with pytest.raises(qb.JobError, match="finalize"):
        job.wait(timeout=30)
    assert str(seed_vm.chain()) == "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]", "not switched before finalize"
    job.finalize()
    wait_for_status(job, "concluded")
    assert job.wait(timeout=30).outcome == "completed"
    job.dismiss()
    wait_for_status(job, "null")
    assert str(seed_vm.chain()) == "[d.qcow2]"
    assert seed_vm.verify(expected_view("ABCD"))


def test_job_ids_are_given_when_missing(seed_vm):
    first = seed_vm.block_stream(device="node-C", base_node="node-A")
    first.wait(timeout=60)
    second = seed_vm.block_stream(device="node-D")
    second.wait(timeout=60)
    assert (first.id, second.id) == ("job0", "job1")
    assert list(seed_vm.jobs["id"]) == ["job0", "job1"]
    assert seed_vm.verify(expected_view("ABCD"))


def test_verbs_typed_as_commands_go_through_the_job(seed_vm, lab):
    job = seed_vm.shell("drive-mirror device=node-D target=e.qcow2 sync=full format=qcow2 job-id=job0 speed=65536")
    wait_for_status(job, "running")
    with pytest.raises(qb.JobError, match="only once the job is ready"):
        seed_vm.shell("block-job-complete device=job0")
    seed_vm.shell("block-job-pause device=job0")
    wait_for_status(job, "paused")
    job.resume()
    seed_vm.shell("block-job-set-speed device=job0 speed=0")
    assert job.speed == 0
    job.wait_ready(timeout=60)
    assert seed_vm.shell("block-job-complete device=job0") == {}
    assert job.wait(timeout=60).outcome == "completed", "wait() knows the typed complete is on its way"
    assert str(seed_vm.chain()) == "[e.qcow2]"
    assert seed_vm.verify(expected_view("ABCD"))


def test_verbs_use_job_commands_where_qemu_deprecates_block_job_ones(seed_vm):
    """From QEMU 10.1 block-job-complete/pause/resume/... are deprecated: the Job sends job-* there, else the seed's."""
    old = seed_vm.deprecated("block-job-complete")
    schema_says = "deprecated" in next(
        c.get("features", []) for c in seed_vm.query("query-qmp-schema") if c["name"] == "block-job-complete"
    )
    assert old == schema_says
    job = seed_vm.block_commit(device="node-D", job_id="job0")
    job.wait_ready(timeout=60)
    job.pause()
    wait_for_status(job, "standby")
    job.resume().complete().wait(timeout=60)
    sent = list(seed_vm.history.command)
    expected = (
        ["job-pause", "job-resume", "job-complete"]
        if old
        else [f"block-{v}" for v in ("job-pause", "job-resume", "job-complete")]
    )
    assert [c for c in sent if c.endswith(("pause", "resume", "complete"))] == expected
    assert str(seed_vm.chain()) == "[a.qcow2]"
    assert seed_vm.verify(expected_view("ABCD"))


def test_the_chain_shows_progress_as_of_now(seed_vm):
    seed_vm.monitoring = False  # no background sampling: only vm.chain() itself can bring the progress up to date
    job = seed_vm.drive_mirror(device="node-D", target="e.qcow2", sync="full", format="qcow2", speed=1 << 20)
    time.sleep(0.5)
    info = seed_vm.query_block_jobs()[0]
    shown = seed_vm.chain().jobs[0]
    assert shown.offset >= info["offset"] > 0, "the diagram is at least as far along as QEMU was a moment before"
    job.cancel(force=True).wait(timeout=60)
    assert job.timeline["t"].is_monotonic_increasing
    assert seed_vm.verify(expected_view("ABCD"))


def test_a_job_sitting_in_ready_does_not_flood_its_timeline(seed_vm):
    job = seed_vm.drive_mirror(device="node-D", target="e.qcow2", sync="full", format="qcow2")
    job.wait_ready(timeout=60)
    rows_at_ready = len(job.timeline)
    time.sleep(1.5)  # about 75 samples at 50 Hz, all alike
    idle_rows = len(job.timeline) - rows_at_ready
    assert idle_rows <= 3, f"{idle_rows} unchanged rows in 1.5 s of READY"
    seed_vm.write("virtio0", "9M", "64k", pattern=0x5C)  # a guest write moves the mirror again
    job.cancel().wait(timeout=60)
    assert job.timeline["offset"].is_monotonic_increasing
    assert seed_vm.verify([("9M", "64k", 0x5C), *expected_view("ABCD")])


def test_images_that_leave_the_chain_are_recorded_when_the_job_ends(seed_vm, lab):
    """Nobody reads the chain here: the job's own end records what it took out, with the seed's rule."""
    seed_vm.block_stream(device="node-D", base_node="node-B", job_id="job0").wait(timeout=60)
    assert [(r.name, r.valid, r.left_by) for r in seed_vm.retired] == [("c.qcow2", True, "stream")]
    job = seed_vm.block_commit(device="node-D", top_node="node-D", base_node="node-A", job_id="job1")
    job.wait_ready(timeout=60).cancel().wait(timeout=60)  # completed, but no pivot: nothing leaves
    # ... but it wrote D into A, which c.qcow2 reads through: c.qcow2 is no longer its point in time
    assert [(r.name, r.valid) for r in seed_vm.retired] == [("c.qcow2", False)]
    seed_vm.flush()
    assert not lab.runs_match("c.qcow2", expected_view("ABC"))
    job = seed_vm.block_commit(device="node-D", top_node="node-D", base_node="node-B", job_id="job2")
    job.wait_ready(timeout=60).complete().wait(timeout=60)
    assert [(r.name, r.valid) for r in seed_vm.retired] == [("c.qcow2", False), ("d.qcow2", False)]
    assert str(seed_vm.chain()) == "[a.qcow2] <-- [b.qcow2]"
    assert seed_vm.verify(expected_view("ABCD"))
