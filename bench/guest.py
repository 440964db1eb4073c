"""The test guest: its boot time, and each live job's time with the guest writing beside an idle guest.

Each round boots two guests on fresh labs, one whose writer runs unthrottled through every job and one that sits
idle, and runs the same four jobs on each, unthrottled: ``block-stream`` of the whole chain into the top, an
active ``block-commit`` to READY then complete, a ``drive-mirror`` (``sync=full``) to READY then complete, and a
full ``blockdev-backup``. A job's time is QEMU's own, from its ``created`` to its ``concluded`` event. Every
writer is stopped after its job and its report must be clean (the guest reads every record back), so the
timings are of jobs that kept the guest's data. The two variants alternate within each round, so that drift on a
shared machine hits both alike.

    .venv/bin/python bench/guest.py            # 3 rounds, about 1.7 minutes under TCG
    .venv/bin/python bench/guest.py --rounds 5
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from stats import median

import qblocknb as qb
from qblocknb.live.guest import guest_accel
from qblocknb.live.guestimage import find_kernel
from qblocknb.live.process import kvm_usable

MiB = 1 << 20
RECORD = 64 << 10
WRITER = {"size": "4M", "record": "64k", "offset": "32M"}  # unthrottled: as fast as the guest's disk goes
DATA_MIB = 512  # enough for each unthrottled job to last a while beside the guest's writes
COMMIT_MIB = 128  # what the active layer holds when it is committed
SCENARIOS = ("stream", "commit", "mirror", "backup")


def wall(job: qb.Job, status: str) -> float:
    events = job.events
    return events[events.status == status]["time"].iloc[0].timestamp()


def job_seconds(job: qb.Job) -> float:
    return wall(job, "concluded") - wall(job, "created")


def prepare(lab: qb.Lab, accel: str | None) -> tuple[qb.Machine, float]:
    """A 1 GiB base holding DATA_MIB, a guest booted on it, and the seed's B, C, D taken live (4 MiB each)."""
    lab.create("a.qcow2", size="1G")
    lab.write("a.qcow2", "64M", f"{DATA_MIB}M", pattern=0xA1)
    vm = lab.launch("a.qcow2", node_name="node-A", guest=True, accel=accel)
    boot = vm.guest.boot_seconds
    below = "node-A"
    for letter, pattern in (("b", 0xB2), ("c", 0xC3), ("d", 0xD4)):
        node = f"node-{letter.upper()}"
        vm.blockdev_snapshot_sync(node_name=below, snapshot_file=f"{letter}.qcow2", snapshot_node_name=node)
        vm.write(vm.device, f"{4 * (ord(letter) - ord('a'))}M", "4M", pattern=pattern)
        below = node
    return vm, boot


def scenario_jobs(vm: qb.Machine, lab: qb.Lab) -> dict[str, Callable[[], qb.Job]]:
    def stream() -> qb.Job:
        return vm.block_stream(device="node-D", job_id="stream").wait(120)  # -> [d.qcow2]

    def commit() -> qb.Job:
        vm.blockdev_snapshot_sync(node_name="node-D", snapshot_file="e.qcow2", snapshot_node_name="node-E")
        vm.write(vm.device, "640M", f"{COMMIT_MIB}M", pattern=0xE5)
        job = vm.block_commit(device="node-E", base_node="node-D", top_node="node-E", job_id="commit")
        job.wait_ready(120).complete()
        return job.wait(120)  # -> [d.qcow2]

    def mirror() -> qb.Job:
        job = vm.drive_mirror(
            device="node-D", target="m.qcow2", format="qcow2", sync="full", node_name="node-M", job_id="mirror"
        )
        job.wait_ready(120).complete()
        return job.wait(120)  # -> [m.qcow2]

    def backup() -> qb.Job:
        lab.create("k.qcow2", size="1G")
        target = {"driver": "file", "filename": str(lab.file("k.qcow2"))}
        vm.blockdev_add(driver="qcow2", node_name="node-K", file=target)
        return vm.blockdev_backup(device="node-M", target="node-K", sync="full", job_id="backup").wait(120)

    return {"stream": stream, "commit": commit, "mirror": mirror, "backup": backup}


def run_round(writing: bool, accel: str | None) -> dict[str, float]:
    """One guest, the four jobs in turn; seconds per job, guest MiB/s during each, and the boot time."""
    result: dict[str, float] = {}
    with qb.Lab() as lab:
        vm, result["boot"] = prepare(lab, accel)
        for name, run in scenario_jobs(vm, lab).items():
            if writing:
                vm.guest.start_writer(**WRITER)
                time.sleep(0.5)
            job = run()
            assert job.outcome == "completed", f"{name}: {job.outcome} {job.error}"
            result[name] = job_seconds(job)
            if writing:
                progress = vm.guest.writer_progress
                during = (progress.kind == "W") & progress.t.between(wall(job, "created"), wall(job, "concluded"))
                report = vm.guest.stop_writer()
                assert report.ok, f"{name}: {report}"
                result[f"{name} writes"] = int(during.sum()) * RECORD / MiB / max(result[name], 1e-9)
        assert str(vm.chain()) == "[m.qcow2]", vm.chain()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    accel = guest_accel(None) or ("kvm" if kvm_usable() else "tcg")
    pvm = Path("/sys/module/kvm_pvm").exists()
    started = time.monotonic()
    runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for number in range(rounds):
        for writing in (number % 2 == 0, number % 2 != 0):  # alternate which variant goes first
            runs[writing].append(run_round(writing, accel))
            print(f"round {number + 1}/{rounds}, {'writing' if writing else 'idle'} guest done", file=sys.stderr)
    elapsed = time.monotonic() - started

    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    boots = [r["boot"] for variant in runs.values() for r in variant]
    print(f"## The test guest: boot and live jobs ({rounds} rounds, medians)\n")
    print(f"`.venv/bin/python bench/guest.py --rounds {rounds}` on {platform.node()}: {os.cpu_count()} cores, "
          f"{qemu}, guest kernel {find_kernel()[0]}, {elapsed:.0f} s in all.\n")  # fmt: skip
    print("| measure | writer running | guest idle | ratio | guest writes during the job |")
    print("|---|---|---|---|---|")
    print(
        f"| boot to shell (-accel {accel}) | {median(boots):.1f} s (min {min(boots):.1f}, max {max(boots):.1f}, "
        f"n={len(boots)}) | | | |"
    )
    for name in SCENARIOS:
        busy, idle = median([r[name] for r in runs[True]]), median([r[name] for r in runs[False]])
        writes = median([r[f"{name} writes"] for r in runs[True]])
        print(f"| {name} job | {busy:.2f} s | {idle:.2f} s | {busy / idle:.2f}x | {writes:.1f} MiB/s |")
    print()
    print(
        f"Jobs unthrottled; a 1 GiB base holding {DATA_MIB} MiB, 4 MiB in each snapshot, {COMMIT_MIB} MiB in the "
        "committed layer; the writer rewrites 4 MiB in 64 KiB records, each synced; every writer report was clean."
    )
    if pvm:
        print(
            "KVM: not measured. This host's /dev/kvm is PVM (kvm_pvm), which runs only kernels built as PVM guests; "
            "the stock Debian kernel does not boot on it, so the guest runs under TCG (the block-job-only QEMUs of "
            "the other benchmarks still use KVM)."
        )


if __name__ == "__main__":
    main()
