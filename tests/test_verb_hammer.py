"""Job verbs in random order during a throttled job: the Job never disagrees with QEMU for long.

A seeded ``random.Random`` picks pause, resume, set-speed, cancel and complete, as methods or typed as QMP
commands, for a mirror (some sequences start in READY), a stream and a backup.  After each step the Job's
status, pause, readiness and speed must equal QEMU's own ``query-jobs`` / ``query-block-jobs`` entry once
settled; a refused verb raises a one-line sentence and changes nothing on either side (a refusal made by the
Job sends nothing at all).  Each job is then finished and its chain and data verified.
"""

from __future__ import annotations

import random
import time

import pytest

import qblocknb as qb
from qblocknb.teaching.seedchain import expected_view

SEED_CHAIN = "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]"
SLOW = 64 << 10  # bytes/s: the seed's few MiB take about a minute at this speed
SPEEDS = (SLOW, 128 << 10, 256 << 10, 0)  # 0 is unlimited: a mirror then becomes READY, a stream or backup ends
SPEED_WEIGHTS = (3, 2, 2, 1)
VERBS = ("pause", "resume", "set-speed", "cancel", "complete")
WEIGHTS = (4, 4, 4, 1, 1)  # the job-ending verbs rarer, so that most sequences go on for a while
STEPS = 20
SETTLE = 10.0  # seconds the two views get to agree after a step


def start(vm: qb.Machine, kind: str) -> qb.Job:
    if kind == "mirror":
        return vm.drive_mirror(device="node-D", target="e.qcow2", sync="full", format="qcow2", speed=SLOW)
    if kind == "stream":
        return vm.block_stream(device="node-D", speed=SLOW)
    return vm.drive_backup(device="node-D", target="e.qcow2", sync="full", format="qcow2", speed=SLOW)


def qemu_view(vm: qb.Machine, job: qb.Job) -> dict | None:
    """QEMU's own view of the job; None once it has none (ended and dismissed)."""
    status = {entry["id"]: entry["status"] for entry in vm.query("query-jobs")}
    block = {entry["device"]: entry for entry in vm.query("query-block-jobs")}
    if job.id not in status or status[job.id] in ("concluded", "null"):
        return None
    if job.id not in block:  # it ended between the two queries: not settled yet, ask again
        return {"status": status[job.id], "between": "query-jobs and query-block-jobs"}
    entry = block[job.id]
    return {"status": status[job.id], "paused": entry["paused"], "ready": entry["ready"], "speed": entry["speed"]}


def job_view(job: qb.Job) -> dict | None:
    """The same, as the Job knows it; None once it has ended."""
    if job.ended:
        return None
    return {
        "status": str(job.status),
        "paused": job.user_paused,
        "ready": job.status in ("ready", "standby"),
        "speed": job.speed,
    }


def settled(vm: qb.Machine, job: qb.Job, step: str) -> dict | None:
    """The view both sides agree on, once QEMU's events have arrived; fails on a lasting disagreement."""
    deadline = time.monotonic() + SETTLE
    while True:
        theirs, ours = qemu_view(vm, job), job_view(job)
        if theirs == ours:
            return ours
        assert time.monotonic() < deadline, f"after {step}: QEMU says {theirs}, the Job says {ours}"
        time.sleep(0.02)


def send(vm: qb.Machine, job: qb.Job, verb: str, speed: int, typed: bool) -> None:
    """One verb, as a Job method or typed as the QMP command (which goes through the Job as well)."""
    if not typed:
        {
            "pause": job.pause,
            "resume": job.resume,
            "set-speed": lambda: job.set_speed(speed),
            "cancel": job.cancel,
            "complete": job.complete,
        }[verb]()
    elif verb == "set-speed":
        vm.execute("block-job-set-speed", {"device": job.id, "speed": speed})
    else:
        vm.execute(f"block-job-{verb}", {"device": job.id})


def finish(vm: qb.Machine, job: qb.Job, rng: random.Random) -> None:
    """Bring a job the sequence left running to its end: resumed, unthrottled, a mirror completed or cancelled."""
    if job.ended:
        return
    try:
        if job.user_paused:
            job.resume()
        job.set_speed(0)
    except qb.CommandError as error:  # a stream or backup set unlimited just before may end first: QEMU's news
        assert error.error_class == "DeviceNotActive", str(error)
        assert job.wait(timeout=60).ended
        return
    if job.type == "mirror":
        job.wait_ready(timeout=60)
        (job.complete if rng.random() < 0.5 else job.cancel)()
    job.wait(timeout=60)


def check_result(vm: qb.Machine, lab: qb.Lab, job: qb.Job) -> None:
    """The chain each outcome leaves, and the data: the guest reads the seed's view whatever happened."""
    chain = str(vm.chain())
    pivoted = job.outcome == "completed" and job.pivot_requested
    if job.type == "mirror" and pivoted:
        assert chain == "[e.qcow2]"
    elif job.type == "stream" and job.outcome == "completed":
        assert chain == "[d.qcow2]"
    else:
        assert chain == SEED_CHAIN, f"{job.type} {job.outcome}"
    assert vm.verify(expected_view("ABCD"))
    copied = job.outcome == "completed" and job.type in ("mirror", "backup")
    if copied:  # a pivot, a cancel after READY, or a finished backup: a whole copy
        assert vm.verify(expected_view("ABCD"), image="e.qcow2")


@pytest.mark.parametrize(
    ("kind", "seed"),
    [("mirror", seed) for seed in range(1, 7)]
    + [("stream", seed) for seed in (7, 8, 9)]
    + [("backup", 10), ("backup", 11)],
)
def test_random_verbs_never_desynchronise(seed_vm, lab, kind, seed):
    rng = random.Random(seed)
    vm = seed_vm
    job = start(vm, kind)
    if kind == "mirror" and seed % 2 == 0:  # half the mirror sequences are hammered from READY
        job.set_speed(0).wait_ready(timeout=60)
    before = settled(vm, job, "the start")
    refused = accepted = 0
    for number in range(STEPS):
        verb = rng.choices(VERBS, WEIGHTS)[0]
        speed, typed = rng.choices(SPEEDS, SPEED_WEIGHTS)[0], rng.random() < 0.3
        step = f"step {number} ({'typed ' if typed else ''}{verb}{f' {speed}' if verb == 'set-speed' else ''})"
        sent = len(vm.history)
        try:
            send(vm, job, verb, speed, typed)
        except qb.Error as error:
            refused += 1
            text = str(error)
            assert text.endswith(".") and "\n" not in text, f"{step}: {text}"
            if isinstance(error, (qb.JobError, qb.InputError)):  # the Job's refusal, or no such job any more
                assert len(vm.history) == sent, f"{step}: refused before sending, yet sent"
            else:
                assert isinstance(error, qb.CommandError), f"{step}: {type(error).__name__}: {text}"
            after = settled(vm, job, step)
            if before is not None and after is not None:  # the job may move by itself; verbs' marks stay
                assert (after["paused"], after["speed"]) == (before["paused"], before["speed"]), step
        else:
            accepted += 1
            after = settled(vm, job, step)
            if verb == "set-speed" and after is not None:
                assert after["speed"] == speed, step
            if verb == "pause" and after is not None:
                assert after["paused"] and after["status"] in ("paused", "standby"), step
        before = after
    assert accepted and refused, f"seed {seed} tried both kinds of step ({accepted} accepted, {refused} refused)"
    finish(vm, job, rng)
    assert settled(vm, job, "the end") is None
    check_result(vm, lab, job)


def test_verbs_qemu_refuses_on_a_paused_job_are_refused_before_sending(seed_vm):
    job = start(seed_vm, "mirror")
    job.pause()
    assert job.status == "paused"
    sent = len(seed_vm.history)
    with pytest.raises(qb.JobError, match="already paused"):
        job.pause()  # QEMU: "Job is already paused"
    with pytest.raises(qb.JobError, match="force"):
        job.cancel()  # QEMU: "The block job for device 'job0' is currently paused"
    assert len(seed_vm.history) == sent
    job.cancel(force=True).wait(timeout=60)
    assert str(seed_vm.chain()) == SEED_CHAIN
    assert seed_vm.verify(expected_view("ABCD"))
