"""Record the QMP events of real block jobs meeting injected I/O errors into tests/data/fault-events.json.

    .venv/bin/python tools/record_fault_events.py

The recorder of tools/record_job_events.py runs these scenarios instead of its own: each on a fresh seed chain
in a real QEMU, with a one-shot ``blkdebug`` fault under the mirror's or backup's target
(``qblocknb.live.faults``); every job event is kept as it arrived, with the QEMU version that sent it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import record_job_events as recorder

import qblocknb as qb
from qblocknb.live import faults


def scenario(name: str, command: str, argument: str, policy: str, errno: int) -> Callable[[qb.Machine], None]:
    """The job into a target whose first data write fails; resumed if QEMU stopped it, completed at READY."""

    def run(vm: qb.Machine) -> None:
        faults.add_target(vm, "e.qcow2", "node-E", faults.Fault("write", errno, once=True), size="64M")
        arguments = {"device": "node-D", "target": "node-E", "sync": "full", "job-id": "job0", argument: policy}
        job = vm.execute(command, arguments)
        with contextlib.suppress(qb.JobError):  # a stop or a report is the point
            job.wait(timeout=60)
        if job.stopped_on_error:
            job.resume()
        if job.type == "mirror":
            job.wait_ready(timeout=60).complete().wait(timeout=60)

    run.__name__ = name
    return run


SCENARIOS = [
    scenario("mirror_stop_resume_complete", "blockdev-mirror", "on-target-error", "stop", faults.EIO),
    scenario("mirror_enospc_nospace_resume_complete", "blockdev-mirror", "on-target-error", "enospc", faults.ENOSPC),
    scenario("mirror_ignore_complete", "blockdev-mirror", "on-target-error", "ignore", faults.EIO),
    scenario("backup_report", "blockdev-backup", "on-target-error", "report", faults.EIO),
]

if __name__ == "__main__":
    recorder.SCENARIOS = SCENARIOS
    recorder.OUT = recorder.ROOT / "tests" / "data" / "fault-events.json"
    recorder.main()
