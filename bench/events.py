"""Event fidelity: over many jobs of a few milliseconds, does every ``JOB_STATUS_CHANGE`` reach ``job.events``,
and how long after QEMU stamped the final one does a ``JobMonitor`` show it?

One QEMU, one chain ``[a] <-- [sN]``: each round takes a live snapshot (``blockdev-snapshot-sync``) and
streams everything into it (``block-stream``), a job of a few milliseconds.  A raw callback on
``vm.session.listeners`` sees every event as it arrives from QEMU (registered after the Machine's own, on the
same stream) and counts what QEMU sent; each Job's ``events`` frame is what reached the toolkit.  A
``JobMonitor(job, plot=False)`` is built before the job starts, and an observer on its ``status`` trait records
``time.time()`` when it first shows ``concluded`` and ``null``; QEMU's event timestamps are its wall clock::

    .venv/bin/python bench/events.py
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from stats import median, p99

import qblocknb as qb
from qblocknb.model.jobstate import event_time
from qblocknb.widgets import JobMonitor

JOBS = 1000
BUDGET_S = 60.0
FINAL = ("concluded", "null")


def bench_events(root: Path, jobs: int = JOBS, budget: float = BUDGET_S) -> tuple[list[dict], list[dict], dict]:
    """The fidelity table, the delay table, and figures for the text (jobs run, seconds taken)."""
    sent: dict[str, list[dict]] = defaultdict(list)  # job id -> JOB_STATUS_CHANGE events as QEMU sent them
    lock = threading.Lock()

    def raw(event: dict) -> None:
        if event.get("event") == "JOB_STATUS_CHANGE":
            with lock:
                sent[event["data"]["id"]].append(event)

    shown: dict[str, dict[str, float]] = defaultdict(dict)  # job id -> status -> time.time() the trait showed it
    with qb.Lab(root / "events") as lab:
        lab.create("a.qcow2", size="4M")
        lab.write("a.qcow2", 0, "64k", pattern=0xA1)
        vm = lab.launch("a.qcow2")
        vm.query_status()
        subscription = vm.session.listeners.register(raw)
        top, started, done = "node-A", time.monotonic(), []
        try:
            for number in range(jobs):
                if time.monotonic() - started > budget:
                    break
                node, job_id = f"n{number}", f"s{number}"
                vm.blockdev_snapshot_sync(
                    node_name=top, snapshot_file=f"s{number}.qcow2", snapshot_node_name=node, format="qcow2"
                )
                job = vm.expect_job("block-stream", {"device": node, "job-id": job_id})
                monitor = JobMonitor(job, plot=False)

                def seen(change: dict, job_id: str = job_id) -> None:
                    for status in FINAL:
                        if f"<b>{status}</b>" in change["new"] and status not in shown[job_id]:
                            shown[job_id][status] = time.time()

                monitor.status.observe(seen, "value")
                try:
                    vm.send("block-stream", {"device": node, "job-id": job_id})
                except Exception:
                    vm.forget_job(job)
                    raise
                job.wait(timeout=30)
                _wait_for(lambda job=job: job.status == "null", 5)
                monitor.close()
                done.append(job)
                if number:  # the previous overlay left the chain with this stream
                    lab.file(f"s{number - 1}.qcow2").unlink(missing_ok=True)
                top = node
            elapsed = time.monotonic() - started
        finally:
            subscription.remove()
    return _tables(done, sent, shown, elapsed)


def _wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.001)


def _tables(jobs: list, sent: dict, shown: dict, elapsed: float) -> tuple[list[dict], list[dict], dict]:
    qemu_sent = sum(len(sent[job.id]) for job in jobs)
    received = sum(int((job.events["event"] == "JOB_STATUS_CHANGE").sum()) for job in jobs)
    in_order = sum(
        list(job.events.loc[job.events["event"] == "JOB_STATUS_CHANGE", "status"])
        == [e["data"]["status"] for e in sent[job.id]]
        for job in jobs
    )
    fidelity = [
        {
            "jobs": len(jobs),
            "JOB_STATUS_CHANGE sent by QEMU": qemu_sent,
            "in job.events": received,
            "share": f"{received / qemu_sent:.2%}" if qemu_sent else "n/a",
            "jobs with the same sequence, in order": f"{in_order} of {len(jobs)}",
        }
    ]
    delays = []
    for status in FINAL:
        values = []
        for job in jobs:
            stamp = next((event_time(e) for e in sent[job.id] if e["data"]["status"] == status), None)
            if stamp is not None and status in shown[job.id]:
                values.append((shown[job.id][status] - stamp) * 1000)
        delays.append(
            {
                "final status": status,
                "jobs measured": len(values),
                "median ms": f"{median(values):.2f}" if values else "n/a",
                "p99 ms": f"{p99(values):.2f}" if values else "n/a",
                "max ms": f"{max(values):.2f}" if values else "n/a",
            }
        )
    return fidelity, delays, {"jobs": len(jobs), "seconds": elapsed}


def main() -> None:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else JOBS
    with tempfile.TemporaryDirectory(prefix="qblocknb-bench-events-") as folder:
        fidelity, delays, figures = bench_events(Path(folder), jobs=jobs)
    print(figures)
    for row in fidelity + delays:
        print(row)


if __name__ == "__main__":
    main()
