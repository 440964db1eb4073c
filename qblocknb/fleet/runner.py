"""Running a fleet plan: each host's disks by ``per_host`` workers, each job at a bandwidth, failures kept apart.

A worker takes the next disk of its host, attaches to the domain (``qb.connect_libvirt``), checks that the
chain is still the one planned (a disk already at its goal is skipped: a second run finishes what the first
left), then sends each step with ``speed`` set, waits for READY and pivots where the step needs it, and
checks the chain after it.  Whatever goes wrong with one disk (a refused step, a host that went away) is
that disk's outcome; the other disks, and the other hosts, go on.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from qblocknb.errors import Error, InputError
from qblocknb.live.attach import connect_libvirt
from qblocknb.model.sizes import parse_named_size

if TYPE_CHECKING:
    from qblocknb.fleet.plan import DiskPlan, FleetPlan

SUMMARY_COLUMNS = ["host", "domain", "disk", "outcome", "step", "progress", "chain", "goal", "detail", "seconds"]
Progress = Callable[[dict], None]  # called with the disk's summary row at each change


@dataclass
class Outcome:
    """Where one disk's run is: pending, running (step N of M, its job), done, at goal, failed or skipped."""

    outcome: str = "pending"
    step: str = ""
    chain: str = ""
    detail: str = ""
    started: float = 0.0
    ended: float = 0.0
    job: Any = None  # the running Job, for its progress

    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started if self.started else 0.0


def run_fleet_plan(
    fleet_plan: FleetPlan,
    per_host: int = 2,
    bandwidth: int | str | None = "50M",
    progress: Progress | None = None,
    timeout: float | None = None,
) -> pd.DataFrame:
    """Run every runnable disk of ``fleet_plan``; its summary once every worker has finished."""
    if not isinstance(per_host, int) or per_host < 1:
        raise InputError(f"per_host={per_host!r} runs nothing", "each host needs one worker at least", "pass 1 or more")
    speed = parse_named_size(bandwidth, "bandwidth") if bandwidth else 0
    queues: dict[str, queue.Queue] = {}
    for item in fleet_plan.disks:
        fleet_plan.outcomes[item.key] = Outcome(chain=str(item.chain))
        if item.action == "skip":
            _set(fleet_plan, item, progress, outcome="skipped", detail=item.note)
        else:
            queues.setdefault(item.host, queue.Queue()).put(item)
    workers = [
        threading.Thread(
            target=_worker,
            args=(fleet_plan, jobs, speed, progress, timeout),
            name=f"qblocknb-fleet-{host}",
            daemon=True,
        )
        for host, jobs in queues.items()
        for _ in range(per_host)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return fleet_plan.summary


def _worker(fleet_plan: FleetPlan, jobs: queue.Queue, speed: int, progress: Progress | None, timeout: float | None):
    while True:
        try:
            item = jobs.get_nowait()
        except queue.Empty:
            return
        try:
            _run_disk(fleet_plan, item, speed, progress, timeout)
        except Exception as error:  # one disk's failure, whatever it is, is that disk's outcome
            _set(fleet_plan, item, progress, outcome="failed", detail=str(error), ended=time.monotonic())


def _run_disk(fleet_plan: FleetPlan, item: DiskPlan, speed: int, progress: Progress | None, timeout: float | None):
    _set(fleet_plan, item, progress, outcome="running", started=time.monotonic())
    vm = connect_libvirt(item.domain, item.uri, device=item.disk)
    try:
        now = vm.chain()
        if str(now) == item.goal:
            _set(fleet_plan, item, progress, outcome="at goal", chain=str(now), ended=time.monotonic())
            return
        if item.plan is None or _nodes(now) != _nodes(item.plan.start):
            raise InputError(
                f"{item.domain} {item.disk} is now {now}, not {item.chain} as planned",
                "its plan names layers of the other chain",
                "plan the fleet again",
            )
        steps = item.plan.steps
        for number, step in enumerate(steps, 1):
            arguments = {**step.arguments, **({"speed": speed} if speed else {})}
            job = vm.execute(step.command, arguments)
            _set(fleet_plan, item, progress, step=f"{number}/{len(steps)} {step.command}", job=job)
            if fleet_plan.fleet is not None:  # libvirt sends no event when a job starts: views learn it here
                fleet_plan.fleet.listeners.notify(item.host, item.domain, "block job")
            if step.ready:
                job.wait_ready(timeout).complete()
            job.wait(timeout)
            now = vm.chain()
            if str(now) != str(step.chain):
                raise Error(f"step {number} of {item.domain} {item.disk} left {now}", f"the plan expected {step.chain}")
        _set(fleet_plan, item, progress, outcome="done", chain=str(now), job=None, ended=time.monotonic())
    except Error as error:
        _set(fleet_plan, item, progress, outcome="failed", detail=str(error), ended=time.monotonic())
    finally:
        vm.session.close()


def _nodes(chain: Any) -> list[str]:
    return [image.node_name or image.file for image in chain]


def _set(fleet_plan: FleetPlan, item: DiskPlan, progress: Progress | None, **changes: Any) -> None:
    outcome = fleet_plan.outcomes[item.key]
    for name, value in changes.items():
        setattr(outcome, name, value)
    if progress is not None:
        progress(_row(item, outcome))


def _row(item: DiskPlan, outcome: Outcome) -> dict:
    job = outcome.job
    return {
        "host": item.host,
        "domain": item.domain,
        "disk": item.disk,
        "outcome": outcome.outcome,
        "step": outcome.step,
        "progress": job.progress if job is not None else (1.0 if outcome.outcome in ("done", "at goal") else None),
        "chain": outcome.chain or str(item.chain),
        "goal": item.goal,
        "detail": outcome.detail,
        "seconds": round(outcome.seconds, 3),
    }


def summary_frame(fleet_plan: FleetPlan) -> pd.DataFrame:
    """One row per disk: outcome, the step it is at, the running job's progress, the chain now, the detail."""
    pending = Outcome()
    rows = [_row(item, fleet_plan.outcomes.get(item.key) or pending) for item in fleet_plan.disks]
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
