"""The Job's state machine, fed event sequences recorded from a real QEMU (tools/record_job_events.py).

No QEMU runs here: these are the fast checks of the pure part; the real-QEMU tests drive the same code live.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qblocknb.model.chain import Chain, Image
from qblocknb.model.jobstate import MAX_ROWS, JobState

RECORDED = json.loads((Path(__file__).parent / "data" / "job-events.json").read_text())
FAULTS = json.loads((Path(__file__).parent / "data" / "fault-events.json").read_text())  # tools/record_fault_events.py
COMMANDS = {
    "stream": ("block-stream", {"device": "node-D", "base-node": "node-B"}),
    "active_commit_complete": ("block-commit", {"device": "node-D"}),
    "mirror_cancel_after_ready": ("drive-mirror", {"device": "node-D", "target": "e.qcow2", "sync": "full"}),
    "mirror_cancel_before_ready": ("drive-mirror", {"device": "node-D", "target": "e.qcow2", "sync": "full"}),
    "stream_paused_and_resumed": ("block-stream", {"device": "node-D"}),
    "backup_write_error": ("blockdev-backup", {"device": "node-D", "target": "node-E", "sync": "full"}),
}
OUTCOMES = {
    "stream": ("completed", False, None),
    "active_commit_complete": ("completed", True, None),
    "mirror_cancel_after_ready": ("completed", True, None),  # cancel after READY: COMPLETED, not CANCELLED
    "mirror_cancel_before_ready": ("cancelled", False, None),
    "stream_paused_and_resumed": ("completed", False, None),
    "backup_write_error": ("failed", False, "Input/output error"),
}


def seed_chain() -> Chain:
    files = ["a", "b", "c", "d"]
    images = tuple(
        Image(
            f"/lab/{x}.qcow2",
            "qcow2",
            64 << 20,
            node_name=f"node-{x.upper()}",
            backing_file=f"/lab/{files[i - 1]}.qcow2" if i else None,
        )
        for i, x in enumerate(files)
    )
    return Chain(images, device="virtio0")


def replay(name: str, pivot: bool = False) -> JobState:
    command, arguments = COMMANDS[name]
    state = JobState("job0", command, arguments, seed_chain(), started=0.0)
    state.pivot_requested = pivot
    for number, event in enumerate(RECORDED[name]["events"]):
        state.apply_event(event, now=float(number))
    return state


@pytest.mark.parametrize("name", list(COMMANDS))
def test_recorded_sequences_end_as_qemu_said(name):
    state = replay(name)
    outcome, ready, error = OUTCOMES[name]
    assert (state.status, state.outcome, state.ready, state.error) == ("null", outcome, ready, error)
    assert state.ended and state.ended_at is not None
    assert list(state.events["event"]) == [e["event"] for e in RECORDED[name]["events"]]
    assert state.events["time"].is_monotonic_increasing, "QEMU's own timestamps, in order"
    assert state.timeline["status"].iloc[-1] == "concluded", "the end is the timeline's last row"
    assert state.verb_refusal("cancel") is not None, "nothing can be done to an ended job"


def test_each_status_allows_what_qemus_verb_table_allows():
    command, arguments = COMMANDS["active_commit_complete"]
    state = JobState("job0", command, arguments, seed_chain(), started=0.0)
    allowed = []
    for event in RECORDED["active_commit_complete"]["events"]:
        state.apply_event(event, now=1.0)
        if event["event"] == "JOB_STATUS_CHANGE":
            verbs = ("complete", "cancel", "pause", "finalize", "dismiss")
            allowed.append((state.status, [v for v in verbs if state.verb_refusal(v) is None]))
    assert allowed == [
        ("created", ["cancel", "pause"]),
        ("running", ["cancel", "pause"]),
        ("ready", ["complete", "cancel", "pause"]),
        ("waiting", ["cancel"]),
        ("pending", ["cancel", "finalize"]),
        ("concluded", ["dismiss"]),
        ("null", []),
    ]


def test_waiting_is_refused_where_it_would_last_forever():
    command, arguments = COMMANDS["mirror_cancel_after_ready"]
    state = JobState("job0", command, arguments, seed_chain(), started=0.0)
    for event in RECORDED["mirror_cancel_after_ready"]["events"][:4]:  # up to BLOCK_JOB_READY
        state.apply_event(event, now=1.0)
    assert "is ready and will not end by itself" in str(state.stuck("end"))
    assert state.stuck("become ready", waiting_for_ready=True) is None
    state.ending_requested = True  # a cancel is on its way
    assert state.stuck("end") is None


def test_a_paused_job_waits_for_resume_and_an_io_error_says_so():
    state = replay("stream_paused_and_resumed")
    assert "paused" in list(state.events["status"])
    failed = replay("backup_write_error")
    assert failed.io_error == "write error, reported"
    assert str(failed.failure()) == (
        "job 'job0' (blockdev-backup) failed on a write error (reported): Input/output error; "
        "see job.events for the whole story."
    )


def test_images_leave_the_chain_only_by_a_completed_job_that_pivoted_where_it_must():
    assert [r.name for r in replay("stream").left_chain()] == ["c.qcow2"]
    assert replay("active_commit_complete").left_chain() == (), "no complete was sent: READY then cancel"
    left = replay("active_commit_complete", pivot=True).left_chain()
    assert [(r.name, r.valid) for r in left] == [("b.qcow2", False), ("c.qcow2", False), ("d.qcow2", False)]
    assert replay("mirror_cancel_after_ready").left_chain() == ()
    assert replay("mirror_cancel_before_ready", pivot=True).left_chain() == ()
    assert replay("backup_write_error").left_chain() == ()


def test_samples_keep_time_order_and_an_idle_job_adds_a_row_a_second():
    state = JobState("job0", "drive-mirror", {"device": "node-D"}, None, started=0.0)
    ready = {"status": "ready", "offset": 10, "len": 10, "speed": 0, "busy": False, "paused": False, "ready": True}
    assert state.apply_sample({**ready, "io-status": "ok"}, at=1.0)
    assert not state.apply_sample({**ready, "io-status": "ok"}, at=1.5), "unchanged and within a second"
    assert state.apply_sample({**ready, "io-status": "ok"}, at=2.1)
    assert not state.apply_sample({**ready, "io-status": "ok"}, at=0.5), "older than the last row"
    assert list(state.timeline["t"]) == [1.0, 2.1]


def test_a_long_running_jobs_timeline_stays_bounded():
    """Sampled every 20 ms, an hour is 180,000 rows: the timeline thins its older half instead of growing."""
    state = JobState("job0", "block-stream", {"device": "node-D"}, None, started=0.0)
    for number in range(180_000):
        info = {"status": "running", "offset": number, "len": 180_000, "speed": 0, "busy": True, "paused": False}
        state.apply_sample({**info, "ready": False, "io-status": "ok"}, at=number * 0.02)
    timeline = state.timeline
    assert len(timeline) <= MAX_ROWS
    assert timeline["t"].is_monotonic_increasing and timeline["offset"].is_monotonic_increasing
    assert timeline["t"].iloc[0] == 0.0 and timeline["offset"].iloc[-1] == 179_999, "start and end are kept"
    assert timeline["t"].diff().max() < 60, "the whole hour is still there, at a coarser grain"


def statuses_and_verdicts(name: str, command: str) -> list[tuple]:
    """Replay a recorded fault sequence; after each event: status, the error in words, and what a wait would say."""
    state = JobState("job0", command, {"device": "node-D", "target": "node-E", "sync": "full"}, None, started=0.0)
    seen = []
    for number, event in enumerate(FAULTS[name]["events"]):
        state.apply_event(event, now=float(number))
        stuck = state.stuck("end")
        seen.append((str(state.status), state.io_error, state.stopped_on_error, stuck and str(stuck)))
    return seen


@pytest.mark.parametrize("name", ["mirror_stop_resume_complete", "mirror_enospc_nospace_resume_complete"])
def test_a_job_qemu_stopped_on_an_error_waits_for_resume_and_says_so(name):
    seen = statuses_and_verdicts(name, "blockdev-mirror")
    paused = (
        "job 'job0' (blockdev-mirror) is paused on an I/O error and will not end: QEMU stopped it on a write error, "
        "as its error policy says; call job.resume() once the fault is fixed, or job.cancel(force=True) to give up."
    )
    assert seen[2:5] == [
        ("running", "write error, stopped", False, None),  # BLOCK_JOB_ERROR comes first, then the pause
        ("paused", "write error, stopped", True, paused),
        ("running", "write error, stopped", False, None),  # resumed (by the Job's verb, which also clears the error)
    ]
    assert seen[-1][0] == "null"
    state = JobState("job0", "blockdev-mirror", {"device": "node-D"}, None, started=0.0)
    for event in FAULTS[name]["events"][:4]:
        state.apply_event(event, now=1.0)
    assert state.verb_refusal("resume") is None, "QEMU marks a job it stopped as paused by the user"
    assert str(state.verb_refusal("pause")) == (
        "cannot pause job 'job0': QEMU already paused it on an I/O error; call job.resume() instead."
    )
    state.resumed()
    assert (state.io_error, state.io_status, state.stopped_on_error) == (None, "ok", False)


def test_an_ignored_error_is_kept_and_a_reported_one_ends_the_job():
    ignored = statuses_and_verdicts("mirror_ignore_complete", "blockdev-mirror")
    assert ignored[2] == ("running", "write error, ignored", False, None)
    assert {row[1] for row in ignored[2:]} == {"write error, ignored"}, "the job goes on, the error stays on record"
    reported = statuses_and_verdicts("backup_report", "blockdev-backup")
    assert ("paused", None, False, None) in reported, "QEMU pauses jobs briefly on its own: no error, no verdict"
    assert reported[-1] == ("null", "write error, reported", False, None)


def test_the_events_frame_has_each_errors_operation_and_action():
    state = JobState("job0", "blockdev-backup", {"device": "node-D"}, None, started=0.0)
    for number, event in enumerate(FAULTS["backup_report"]["events"]):
        state.apply_event(event, now=float(number))
    errors = state.events[state.events["event"] == "BLOCK_JOB_ERROR"]
    assert list(zip(errors["operation"], errors["action"], strict=True)) == [("write", "report")]
    assert state.info().fault == "write error, reported"


def test_the_timeline_keeps_the_io_status_of_a_stopped_job():
    state = JobState("job0", "blockdev-mirror", {"device": "node-D"}, None, started=0.0)
    row = {"status": "paused", "offset": 0, "len": 10, "speed": 0, "busy": False, "paused": True, "ready": False}
    assert state.apply_sample({**row, "io-status": "nospace"}, at=1.0)
    assert state.io_status == "nospace" and list(state.timeline["io-status"]) == ["nospace"]


def test_a_paused_job_is_cancelled_only_by_force_as_qemu_wants():
    state = JobState("job0", "block-stream", {"device": "node-D"}, None, started=0.0)
    assert state.cancel_refusal(force=False) is None
    state.user_paused = True
    assert str(state.cancel_refusal(force=False)) == (
        "cannot cancel job 'job0' while it is paused: you paused it, and QEMU cancels a paused job only when forced; "
        "call job.cancel(force=True), or job.resume() first."
    )
    assert state.cancel_refusal(force=True) is None
