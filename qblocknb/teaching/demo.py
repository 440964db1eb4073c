"""The main job: each of the seed's four operations on a fresh ``[A] <-- [B] <-- [C] <-- [D]``, verified.

Each operation gets its own QEMU on a freshly built chain, so one result never
depends on another; the guest-visible data is checked after every operation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from qblocknb.errors import Error
from qblocknb.live.lab import Lab
from qblocknb.live.machine import Machine
from qblocknb.teaching.seedchain import build_seed_chain, expected_view


@dataclass
class Verdict:
    """How one operation went."""

    operation: str
    before: str
    after: str
    passed: bool
    detail: str

    def line(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        return f"{mark}  {self.operation:<13} {self.before}  ->  {self.after}   ({self.detail})"


def _stream(vm: Machine, lab: Lab) -> str:
    vm.block_stream(device="node-D", base_node="node-A", job_id="stream0").wait(timeout=120)
    return "b.qcow2 and c.qcow2 left the chain and remain valid points in time"


def _commit(vm: Machine, lab: Lab) -> str:
    job = vm.block_commit(device="node-D", top_node="node-D", base_node="node-A", job_id="commit0")
    job.wait_ready(timeout=120).complete().wait(timeout=120)
    return "active commit: READY, then complete pivoted virtio0 to a.qcow2"


def _mirror(vm: Machine, lab: Lab) -> str:
    job = vm.drive_mirror(device="node-D", target="e.qcow2", sync="full", format="qcow2", job_id="mirror0")
    job.wait_ready(timeout=120).complete().wait(timeout=120)
    return "sync=full, READY, then complete pivoted virtio0 to e.qcow2"


def _backup(vm: Machine, lab: Lab) -> str:
    vm.drive_backup(device="node-D", target="e.qcow2", sync="full", format="qcow2", job_id="backup0").wait(timeout=120)
    comparison = vm.compare("e.qcow2")
    if not comparison:
        raise Error("the backup differs from the guest view", comparison.message, "look at the QEMU log")
    return f"qemu-img compare e.qcow2: {comparison.message.rstrip('.')}"


OPERATIONS: list[tuple[str, Callable[[Machine, Lab], str]]] = [
    ("block-stream", _stream),
    ("block-commit", _commit),
    ("drive-mirror", _mirror),
    ("drive-backup", _backup),
]


def run_demo(say: Callable[[str], None] = print) -> bool:
    """Run the four operations; print chains, a job table and one verdict per operation. True if all passed."""
    verdicts: list[Verdict] = []
    jobs: list[pd.DataFrame] = []
    with Lab() as lab:
        say(f"Scratch lab: {lab.path}")
        for number, (name, operation) in enumerate(OPERATIONS, start=1):
            workdir = Lab(lab.path / f"{number}-{name}")
            try:
                say(f"\n[{number}/{len(OPERATIONS)}] {name}: building [A] <-- [B] <-- [C] <-- [D] in a new QEMU")
                vm = build_seed_chain(workdir)
                before = str(vm.chain())
                say(f"    before: {before}")
                detail = operation(vm, workdir)
                after = str(vm.chain())
                say(f"    after:  {after}")
                if not vm.verify(expected_view("ABCD")):
                    raise Error(
                        f"{name} changed what the guest reads",
                        "a pattern did not read back",
                        "look at the QEMU log in the lab folder",
                    )
                verdicts.append(Verdict(name, before, after, True, detail + "; guest data verified"))
                jobs.append(vm.jobs)
            except Error as error:
                verdicts.append(Verdict(name, "[A] <-- [B] <-- [C] <-- [D]", "?", False, str(error)))
            finally:
                workdir.close()
    table = pd.concat(jobs, ignore_index=True) if jobs else pd.DataFrame()
    say("\nJobs:")
    if not table.empty:
        columns = ["id", "type", "command", "outcome", "duration_s", "bytes", "mean_rate_Bps"]
        say(table[columns].to_string(index=False, float_format=lambda value: f"{value:.3f}"))
    say("\nVerdicts:")
    for verdict in verdicts:
        say(verdict.line())
    return all(verdict.passed for verdict in verdicts)
