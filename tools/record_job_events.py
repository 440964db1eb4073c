"""Record the QMP events of real block jobs into tests/data/job-events.json, for tests/test_jobstate.py.

    .venv/bin/python tools/record_job_events.py

Each scenario runs on a fresh seed chain in a real QEMU; every event QEMU sends while it runs is kept
as it arrived (name, data, QEMU's timestamp), with the QEMU version that sent it.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import qblocknb as qb  # noqa: E402
from qblocknb.teaching.seedchain import build_seed_chain  # noqa: E402

OUT = ROOT / "tests" / "data" / "job-events.json"


def stream(vm: qb.Machine) -> None:
    vm.block_stream(device="node-D", base_node="node-B", job_id="job0").wait(timeout=60)


def active_commit_complete(vm: qb.Machine) -> None:
    vm.block_commit(device="node-D", job_id="job0").wait_ready(timeout=60).complete().wait(timeout=60)


def mirror_cancel_after_ready(vm: qb.Machine) -> None:
    job = vm.drive_mirror(device="node-D", target="e.qcow2", sync="full", format="qcow2", job_id="job0")
    job.wait_ready(timeout=60).cancel().wait(timeout=60)


def mirror_cancel_before_ready(vm: qb.Machine) -> None:
    job = vm.drive_mirror(device="node-D", target="e.qcow2", sync="full", format="qcow2", job_id="job0", speed=1)
    job.cancel().wait(timeout=60)


def stream_paused_and_resumed(vm: qb.Machine) -> None:
    job = vm.block_stream(device="node-D", job_id="job0", speed="1M")
    job.pause()
    job.resume()
    job.set_speed(0).wait(timeout=60)


def backup_write_error(vm: qb.Machine) -> None:
    """blkdebug fails every write to the target's image file: the backup ends with an error."""
    vm.blockdev_add(
        driver="qcow2",
        node_name="node-E",
        file={
            "driver": "blkdebug",
            "image": {"driver": "file", "filename": "e.qcow2"},
            "inject-error": [{"event": "write_aio", "errno": 5}],
        },
    )
    with contextlib.suppress(qb.JobError):  # the failure is the point
        vm.blockdev_backup(device="node-D", target="node-E", sync="full", job_id="job0").wait(timeout=60)


SCENARIOS = [
    stream,
    active_commit_complete,
    mirror_cancel_after_ready,
    mirror_cancel_before_ready,
    stream_paused_and_resumed,
    backup_write_error,
]


def main() -> None:
    recorded = {}
    for scenario in SCENARIOS:
        with qb.Lab() as lab:
            vm = build_seed_chain(lab)
            if scenario is backup_write_error:
                lab.create("e.qcow2", size="64M")
            events: list[dict] = []
            vm.listeners.register(events.append)
            scenario(vm)
            version = vm.query("query-version")["qemu"]
            recorded[scenario.__name__] = {
                "qemu": f"{version['major']}.{version['minor']}.{version['micro']}",
                "events": [e for e in events if e["event"].startswith(("JOB_", "BLOCK_JOB_"))],
            }
    OUT.write_text(json.dumps(recorded, indent=1) + "\n")
    print(f"wrote {OUT}: " + ", ".join(f"{name} ({len(r['events'])} events)" for name, r in recorded.items()))


if __name__ == "__main__":
    main()
