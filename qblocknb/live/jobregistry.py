"""Every Job of one QEMU: their ids, the router that hands each event to its Job, the sampler that builds
their timelines, and the images they took out of the chain.

Events arrive on the session's thread; a job QEMU reports that nobody here started (libvirt's, another
client's) gets a Job of type ``unknown`` so that it is followed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from qblocknb.errors import InputError
from qblocknb.live.jobs import Job
from qblocknb.model.chain import RetiredImage, written_into
from qblocknb.qmp import loop

SAMPLE_INTERVAL = 0.02
JOB_EVENTS = {
    "JOB_STATUS_CHANGE",
    "BLOCK_JOB_COMPLETED",
    "BLOCK_JOB_CANCELLED",
    "BLOCK_JOB_READY",
    "BLOCK_JOB_ERROR",
    "BLOCK_JOB_PENDING",
}
SUMMARY_COLUMNS = [
    "id",
    "type",
    "command",
    "status",
    "outcome",
    "start",
    "end",
    "duration_s",
    "bytes",
    "mean_rate_Bps",
    "error",
]


class JobRegistry:
    """The jobs of one QEMU, in the order they started."""

    def __init__(self, session: Any, new_job: Callable[..., Job], monitoring: Callable[[], bool]) -> None:
        self.session = session
        self.new_job = new_job  # builds a Job wired to the machine: (id, command, arguments, chain, source, target)
        self.monitoring = monitoring  # asked when a job starts: sample it for a timeline?
        self.sample_interval = SAMPLE_INTERVAL
        self.job_list: list[Job] = []
        self.retired: list[RetiredImage] = []
        self._by_id: dict[str, Job] = {}
        self._refused_ids: set[str] = set()  # jobs QEMU created and aborted within a refused command
        self._sampler: asyncio.Future | None = None
        self._lock = threading.Lock()

    def add(self, job: Job) -> None:
        """Follow a job that is about to start; the sampler starts with it."""
        job.listeners.register(self._retire_when_ended)
        with self._lock:
            self._by_id[job.id] = job
        self.job_list.append(job)
        self._ensure_sampler()

    def forget(self, job: Job) -> None:
        """Drop a registered Job whose command QEMU refused."""
        with self._lock:
            self._by_id.pop(job.id, None)
            self._refused_ids.add(job.id)
        with contextlib.suppress(ValueError):
            self.job_list.remove(job)

    def running(self, job_id: str | None) -> Job | None:
        """The Job with this id, if it has not ended."""
        job = self._by_id.get(job_id) if job_id else None
        return job if job is not None and not job.ended else None

    def active(self) -> tuple[Job, ...]:
        return tuple(job for job in self.job_list if not job.ended)

    def next_id(self) -> str:
        """``job0``, ``job1``, ...: the first id no job of this session has used (refused ones included)."""
        used = {job.id for job in self.job_list} | self._refused_ids
        number = 0
        while f"job{number}" in used:
            number += 1
        return f"job{number}"

    def find(self, job_id: str) -> Job:
        """The Job with this id."""
        for job in reversed(self.job_list):
            if job.id == job_id:
                return job
        ids = ", ".join(job.id for job in self.job_list) or "none"
        raise InputError(f"there is no job '{job_id}'", f"jobs of this session are {ids}", "pick one of those")

    def frame(self) -> pd.DataFrame:
        """One row per job: type, start, end, duration, bytes, mean rate, outcome."""
        return pd.DataFrame([job.summary() for job in self.job_list], columns=SUMMARY_COLUMNS)

    # -- events (the session's thread) ------------------------------------------------------
    def route(self, event: dict) -> None:
        """Hand a job event to its Job; a job nobody here started gets one."""
        name, data = event.get("event"), event.get("data", {})
        if name not in JOB_EVENTS:
            return
        job_id = data.get("id") or data.get("device")
        with self._lock:
            job = self._by_id.get(job_id)
            if job is not None and job.ended and name == "JOB_STATUS_CHANGE" and data.get("status") == "created":
                job = None  # a new job that reuses an old id
            if job is None and job_id in self._refused_ids:  # the rest of a refused command's aborted job
                if data.get("status") == "null":
                    self._refused_ids.discard(job_id)
            elif job is None and name == "JOB_STATUS_CHANGE" and data.get("status") == "created":
                job = self.new_job(job_id, "unknown", {}, None)  # no start chain: it retires nothing
                self._by_id[job_id] = job
                self.job_list.append(job)
        if job is not None:
            job.handle_event(event)

    def _retire_when_ended(self, job: Job) -> None:
        """When a job has ended, remember the images it took out of the chain (on the event thread: no QMP)."""
        if job.ended:
            with self._lock:
                written = job.writes_into()
                if written is not None:  # what the commit wrote into, images retired earlier may read through
                    self.retired[:] = written_into(tuple(self.retired), written, str(job.type))
                known = {image.file for image in self.retired}
                self.retired.extend(image for image in job.left_chain() if image.file not in known)

    # -- sampling ---------------------------------------------------------------------------
    def _ensure_sampler(self) -> None:
        """Start sampling unless it runs already; a closed session gets none (it would start the loop for nothing)."""
        if self.monitoring() and self.session.connected and (self._sampler is None or self._sampler.done()):
            self._sampler = loop.submit(self._sample_jobs())

    async def _sample_jobs(self) -> None:
        """Poll query-block-jobs while any job runs, so each Job gets a timeline."""
        while self._any_running() and self.session.connected:
            try:
                infos = await self.session.execute_async("query-block-jobs")
            except Exception:  # QEMU gone or busy: the waiting side reports it
                return
            self._record(infos, time.monotonic())
            await asyncio.sleep(self.sample_interval)

    def _any_running(self) -> bool:
        with self._lock:  # callers on other threads add jobs while the sampler looks
            return any(not job.ended for job in self._by_id.values())

    def sample_now(self) -> None:
        """Bring the running jobs' progress up to date (for a drawing of the chain as of now)."""
        self._record(self.session.execute("query-block-jobs", record=False), time.monotonic())

    def _record(self, infos: list[dict], at: float) -> None:
        for info in infos:
            job = self._by_id.get(info.get("device"))
            if job is not None:
                job.handle_sample(info, at)
