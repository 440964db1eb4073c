"""The doctor's checks on jobs and on the VM's run state, from ``query-block-jobs``, ``query-jobs`` and
``query-status``.

A job left READY, PENDING or CONCLUDED keeps its id (a new job with it is refused: "Job 'job0' already
exists"); a job or a VM stopped by an I/O error waits for someone to resume it; a throttled job may need
hours; a mirror whose ``len`` grows faster than its ``offset`` never converges::

    >>> slow = {"device": "job0", "type": "stream", "status": "running", "len": 1 << 30, "offset": 0,
    ...         "speed": 1 << 10, "io-status": "ok", "ready": False}
    >>> [(f.subject, str(f.fix)) for f in job_findings(Observed(block_jobs=[slow]))]
    [('job0', 'block-job-set-speed device=job0 speed=2097152')]
"""

from __future__ import annotations

import math

from qblocknb.model.doctor import Finding, Fix, Observed, crashes_node_query
from qblocknb.model.sizes import human_size

SLOW = 3600.0  # seconds: a job that needs longer than this at its speed is reported
WITHIN = 600.0  # seconds: the speed a fix sets finishes the rest in this time
MiB = 1 << 20
CONVERGING = ("mirror", "commit")  # the jobs whose len grows with the guest's writes


def job_findings(seen: Observed) -> list[Finding]:
    """Jobs waiting for a verb, stopped by an error or a pause, or too slow to finish."""
    found: list[Finding] = []
    waiting = {job["id"]: job for job in seen.jobs if job.get("status") in ("pending", "concluded")}
    for job in seen.jobs:
        if job["id"] in waiting:
            found.append(_waiting(job))
    later = {job["device"]: job for job in seen.later_block_jobs or []}
    for job in seen.block_jobs:
        if job["device"] in waiting:
            continue
        found += _block_job(job, later.get(job["device"]), seen.interval)
    return found


def _waiting(job: dict) -> Finding:
    job_id, status = job["id"], job["status"]
    blocks = f"its id stays taken: a new job named '{job_id}' is refused (\"Job '{job_id}' already exists\")"
    if status == "pending":
        return Finding(
            "warning",
            "job",
            job_id,
            f"job {job_id} ({job.get('type', 'job')}) is done and waits for job-finalize (auto-finalize is off)",
            f"its changes to the chain are not made until then, and {blocks}",
            f"finalize it (vm.job_finalize(id='{job_id}')), then dismiss it if auto-dismiss is off too",
            Fix("finalize the job", (("job-finalize", {"id": job_id}),)),
            job_id,
        )
    failed = f", with the error: {job['error']}" if job.get("error") else ""
    if crashes_node_query([job]):
        blocks += "; and on QEMU 7.2 listing the nodes (query-named-block-nodes, vm.chain()) crashes QEMU until then"
    return Finding(
        "warning" if not failed else "error",
        "job",
        job_id,
        f"job {job_id} ({job.get('type', 'job')}) has ended{failed} and waits for job-dismiss (auto-dismiss is off)",
        blocks,
        f"read its outcome, then dismiss it (vm.job_dismiss(id='{job_id}'))",
        Fix("dismiss the job", (("job-dismiss", {"id": job_id}),)),
        job_id,
    )


def _block_job(job: dict, later: dict | None, interval: float) -> list[Finding]:
    job_id, status = job["device"], job.get("status", "")
    if job.get("io-status", "ok") != "ok" and (status == "paused" or job.get("paused")):
        return [_stopped_by_error(job)]
    if status == "paused" or job.get("paused"):
        return [
            Finding(
                "warning",
                "job",
                job_id,
                f"job {job_id} ({job['type']}) is paused at {_percent(job)}",
                "a paused job copies nothing, so it seems stuck, and it holds its nodes meanwhile",
                "resume it, or cancel it",
                Fix("resume the job", (("block-job-resume", {"device": job_id}),)),
                job_id,
            )
        ]
    found = [_ready(job)] if job.get("ready") or status in ("ready", "standby") else _slow(job)
    if later is not None and job["type"] in CONVERGING and interval > 0:
        found += _diverging(job, later, interval)
    return found


def _stopped_by_error(job: dict) -> Finding:
    job_id, io_status = job["device"], job["io-status"]
    cause = "the target's storage is full" if io_status == "nospace" else "a read or write failed on the host"
    return Finding(
        "error",
        "job",
        job_id,
        f"job {job_id} ({job['type']}) is paused by an I/O error (io-status {io_status}) at {_percent(job)}",
        f"{cause}, and its error policy (stop or enospc) waits for a resume; until then it copies nothing",
        "find the cause (the BLOCK_JOB_ERROR event in vm.job(id).events if this session started it, the host's "
        "free space with df, dmesg for the disk), fix it, then resume the job; or cancel it with force=true",
        Fix("resume the job once the cause is fixed", (("block-job-resume", {"device": job_id}),)),
        job_id,
    )


def _ready(job: dict) -> Finding:
    job_id = job["device"]
    return Finding(
        "warning",
        "job",
        job_id,
        f"job {job_id} ({job['type']}) is READY and waits for block-job-complete or block-job-cancel",
        "a READY job never ends by itself: it keeps copying every guest write, holds its nodes and its id",
        f"complete it to switch to the copy (vm.block_job_complete(device='{job_id}')), or cancel it to keep "
        "the source (the copy stays a point in time)",
        Fix("complete the job (pivot)", (("block-job-complete", {"device": job_id}),)),
        job_id,
    )


def _slow(job: dict) -> list[Finding]:
    speed, remaining = job.get("speed", 0), job.get("len", 0) - job.get("offset", 0)
    if job.get("status") != "running" or speed <= 0 or remaining <= 0 or remaining / speed <= SLOW:
        return []
    needed = _round_up(remaining / WITHIN)
    return [
        Finding(
            "warning",
            "job",
            job["device"],
            f"job {job['device']} ({job['type']}) is throttled to {human_size(speed)}/s with "
            f"{human_size(remaining)} left: about {_duration(remaining / speed)} more",
            f"it is not stuck, only slow: {_percent(job)} done",
            f"raise its speed: {human_size(needed)}/s finishes it in about {WITHIN / 60:.0f} minutes "
            "(speed 0 removes the limit)",
            Fix("raise the job's speed", (("block-job-set-speed", {"device": job["device"], "speed": needed}),)),
            job["device"],
        )
    ]


def _diverging(job: dict, later: dict, interval: float) -> list[Finding]:
    grown, copied = later["len"] - job["len"], later["offset"] - job["offset"]
    if grown <= 0 or grown <= copied:
        return []
    dirtied, rate = grown / interval, copied / interval
    speed = later.get("speed", 0)
    fix = None
    if speed > 0:
        needed = _round_up(2 * dirtied + max(later["len"] - later["offset"], 0) / WITHIN)
        fix = Fix(
            "raise the job's speed above the guest's writes",
            (("block-job-set-speed", {"device": job["device"], "speed": needed}),),
        )
    return [
        Finding(
            "warning",
            "job",
            job["device"],
            f"job {job['device']} ({job['type']}) cannot converge: its work grew by {human_size(dirtied)}/s "
            f"while it copied {human_size(rate)}/s",
            "the guest writes faster than the job copies, so it never catches up (and block-job-complete waits "
            "for it to catch up)",
            "raise or remove its speed limit"
            if speed > 0
            else "slow the guest's writes, or switch the mirror to "
            "copy-mode=write-blocking (block-job-change, QEMU 8.2+)",
            fix,
            job["device"],
        )
    ]


def vm_findings(seen: Observed) -> list[Finding]:
    """The VM stopped by an I/O error, waiting for an incoming migration, or left behind by one."""
    status = seen.status.get("status", "")
    if status == "io-error":
        failed = [
            entry.get("device") or entry.get("qdev", "?")
            for entry in seen.blocks
            if entry.get("io-status", "ok") != "ok"
        ]
        disks = ", ".join(failed) or "a disk"
        return [
            Finding(
                "error",
                "vm",
                "QEMU",
                f"the VM paused itself: a guest request on {disks} met an I/O error (query-status io-error)",
                "the disk's werror/rerror policy stops the guest instead of failing its request; the request is "
                "retried on cont",
                "find the cause first (host free space with df, dmesg, the image's storage), fix it, then cont",
                Fix("resume the VM (cont) once the cause is fixed", (("cont", {}),)),
                failed[0] if failed else None,
            )
        ]
    if status == "inmigrate":
        return [
            Finding(
                "warning",
                "vm",
                "QEMU",
                "this QEMU waits for an incoming migration (started with -incoming; query-status inmigrate)",
                "its guest never runs until a migrate from the source completes: cont only arms autostart",
                "run migrate on the source to this QEMU's -incoming address, or quit it if it is not needed",
            )
        ]
    if status == "postmigrate":
        return [
            Finding(
                "warning",
                "vm",
                "QEMU",
                "this QEMU's guest has migrated away (query-status postmigrate)",
                "it is a stale copy: resuming it would run the guest twice on the same disks",
                "quit it once the destination runs the guest",
            )
        ]
    return []


def _percent(job: dict) -> str:
    length = job.get("len", 0)
    return f"{100 * job.get('offset', 0) / length:.0f} %" if length else "0 %"


def _round_up(speed: float) -> int:
    return max(1, math.ceil(speed / MiB)) * MiB


def _duration(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:.0f} hours" if hours < 48 else f"{hours / 24:.0f} days"
