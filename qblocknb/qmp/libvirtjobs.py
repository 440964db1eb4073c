"""The block jobs libvirt runs on a domain's disks, followed as QMP jobs: their ids, progress and events.

libvirt knows one block job per disk and never gives it an id; qblocknb's Jobs have ids (``job0``).  This
keeps which job runs on which disk, samples libvirt's progress (``blockJobInfo``; ``jobStats`` for a backup,
which libvirt runs as a domain job), and retells libvirt's ``BLOCK_JOB_2`` events as QEMU's
(``qblocknb.model.libvirtevents``).  A job that another client started (``virsh blockcommit``) is adopted
under the disk's name as its id, which is how virsh names it too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from qblocknb.model.libvirtevents import JOB_TYPES, NativeJob, ended_events, ready_events, started_events
from qblocknb.model.vocabulary import JobType

BACKUP_OPERATION = 9  # virDomainJobOperation: VIR_DOMAIN_JOB_OPERATION_BACKUP
LIBVIRT_TYPES = {1: JobType.STREAM, 2: JobType.MIRROR, 3: JobType.COMMIT, 4: JobType.COMMIT}  # blockJobInfo's type
Emit = Callable[[list[dict]], None]


class NativeJobs:
    """The block jobs of one domain, by disk target; events go out through ``emit`` in QEMU's order."""

    def __init__(self, libvirt: Any, domain: Any, emit: Emit, log: str) -> None:
        self.libvirt, self.domain, self.emit, self.log = libvirt, domain, emit, log
        self._jobs: dict[str, NativeJob] = {}
        self._lock = threading.Lock()

    def of(self, disk: str) -> NativeJob | None:
        with self._lock:
            return self._jobs.get(disk)

    def disk_of(self, job_id: str | None) -> str | None:
        """The disk the job ``job_id`` runs on, if it runs."""
        with self._lock:
            return next((disk for disk, job in self._jobs.items() if job_id is not None and job.id == job_id), None)

    # -- starting ---------------------------------------------------------------------------
    def expect(self, disk: str, command: str, arguments: dict) -> None:
        """Follow and announce the job a command starts, under the id qblocknb gave it (a transaction's is its
        backup's)."""
        if command == "transaction":
            starting = [a for a in arguments.get("actions", []) if a.get("type") in JOB_TYPES]
            command, arguments = (starting[0]["type"], starting[0].get("data", {})) if starting else (command, {})
        job = NativeJob(arguments.get("job-id") or disk, JOB_TYPES.get(command, JobType.BACKUP))
        job.speed = int(arguments.get("speed") or 0)
        with self._lock:
            self._jobs[disk] = job
        self.emit(started_events(job))

    def failed_to_start(self, disk: str, why: str) -> None:
        """libvirt refused the command: the job announced for it ends at once, as QEMU ends a job it could not run."""
        with self._lock:
            job = self._jobs.pop(disk, None)
        if job is not None:
            self.emit(ended_events(job, "failed", why))

    def adopt(self, disk: str, ready: bool) -> None:
        """Follow a block job that another client started on ``disk``; ``ready`` as the live XML says."""
        if self.of(disk) is not None:
            return
        info = self.domain.blockJobInfo(disk, self.libvirt.VIR_DOMAIN_BLOCK_JOB_INFO_BANDWIDTH_BYTES)
        job_type = LIBVIRT_TYPES.get(info.get("type")) if info else None
        if job_type is None:
            return
        job = NativeJob(disk, job_type)
        job.sampled(info.get("cur", 0), info.get("end", 0), info.get("bandwidth", 0))
        with self._lock:
            if disk in self._jobs:
                return
            self._jobs[disk] = job
        self.emit(started_events(job) + (ready_events(job) if ready else []))

    # -- progress ---------------------------------------------------------------------------
    def entries(self) -> list[dict]:
        """``query-block-jobs``: each job with libvirt's cur/end, as QEMU's offset/len."""
        with self._lock:
            jobs = list(self._jobs.items())
        for disk, job in jobs:
            if job.type == JobType.BACKUP:
                stats = self.domain.jobStats(0)
                if stats.get("operation") == BACKUP_OPERATION:
                    job.sampled(stats.get("disk_processed", 0), stats.get("disk_total", 0), job.speed)
                continue
            info = self.domain.blockJobInfo(disk, self.libvirt.VIR_DOMAIN_BLOCK_JOB_INFO_BANDWIDTH_BYTES)
            if info:
                job.sampled(info.get("cur", 0), info.get("end", 0), info.get("bandwidth", 0))
        return [job.entry() for _, job in jobs]

    # -- libvirt's callbacks (its event thread) ---------------------------------------------
    def on_block_job(self, disk: str, backup: bool, status: int) -> None:
        """``BLOCK_JOB_2``: READY, or the end (completed, failed, cancelled).

        A backup's end is the user's backup's only when one is followed on that disk: otherwise it is the
        pull-mode view that ``vm.verify()`` opened (libvirt runs one backup at a time).
        """
        libvirt = self.libvirt
        with self._lock:
            job = self._jobs.get(disk)
            if job is None or backup != (job.type == JobType.BACKUP):
                return
            if status == libvirt.VIR_DOMAIN_BLOCK_JOB_READY:
                events = ready_events(job)
            else:
                del self._jobs[disk]
                outcome = {
                    libvirt.VIR_DOMAIN_BLOCK_JOB_COMPLETED: "completed",
                    libvirt.VIR_DOMAIN_BLOCK_JOB_FAILED: "failed",
                }.get(status, "cancelled")
                events = ended_events(job, outcome, f"libvirt reports that the job failed; {self.log} says why")
        self.emit(events)

    def on_job_completed(self, params: dict) -> None:
        """A backup's final figures come with ``JOB_COMPLETED``; they fill its end event's progress."""
        with self._lock:
            for job in self._jobs.values():
                if job.type == JobType.BACKUP:
                    job.sampled(params.get("disk_processed", 0), params.get("disk_total", 0), job.speed)

    def stopped(self, why: str) -> None:
        """The domain stopped: every job it ran has ended, failed."""
        with self._lock:
            jobs, self._jobs = list(self._jobs.values()), {}
        for job in jobs:
            self.emit(ended_events(job, "failed", f"the domain stopped while the job ran ({why})"))
