"""Toolkit vs raw ``qemu.qmp``, and monitoring on vs off, measured side by side in one run.

Variants are interleaved round by round so that drift on a shared machine hits
all of them alike; each table reports medians, 99th percentiles (with a few dozen
rounds, close to the slowest round) and the ratio to the baseline.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from qemu.qmp import EventListener, QMPClient
from stats import median, p99

import qblocknb as qb
from qblocknb.live import process as qemu_process

ROUNDS = 15
WORKFLOW_ROUNDS = 30
SNAPSHOTS = [("node-A", "b.qcow2", "node-B"), ("node-B", "c.qcow2", "node-C"), ("node-C", "d.qcow2", "node-D")]


def _fresh_base(lab: qb.Lab) -> None:
    for name in ("a.qcow2", "b.qcow2", "c.qcow2", "d.qcow2", "e.qcow2"):
        lab.file(name).unlink(missing_ok=True)
    lab.create("a.qcow2", size="64M")
    lab.write("a.qcow2", 0, "8M", pattern=0xA1)


def workflow_toolkit(vm: qb.Machine, lab: qb.Lab) -> None:
    """Three snapshots, a stream of everything into D, and a final query: the seed's first steps."""
    for node, file, new in SNAPSHOTS:
        vm.blockdev_snapshot_sync(node_name=node, snapshot_file=file, snapshot_node_name=new, format="qcow2")
    vm.block_stream(device="node-D", job_id="job0").wait(timeout=60)
    vm.query_block_jobs()


async def _workflow_raw(client: QMPClient) -> None:
    """The same steps with qemu.qmp alone: no checks, no history, no timeline."""
    listener = EventListener(("JOB_STATUS_CHANGE",))
    client.register_listener(listener)
    try:
        for node, file, new in SNAPSHOTS:
            arguments = {"node-name": node, "snapshot-file": file, "snapshot-node-name": new, "format": "qcow2"}
            await client.execute("blockdev-snapshot-sync", arguments)
        await client.execute("block-stream", {"device": "node-D", "job-id": "job0"})
        async for event in listener:
            if event["data"]["status"] == "null":
                break
        await client.execute("query-block-jobs")
    finally:
        client.remove_listener(listener)


def run_raw(lab: qb.Lab, traced: bool) -> tuple[float | None, int | None]:
    """Start QEMU and connect outside the timing, as the toolkit variants do, then time the workflow."""
    socket = lab.path / "raw.sock"
    socket.unlink(missing_ok=True)
    args = qemu_process.command_line(lab.file("a.qcow2"), "node-A", "qcow2", socket, None, None)
    process = qemu_process.QemuProcess(args, cwd=lab.path, log_stem=lab.path / "raw")
    loop = asyncio.new_event_loop()
    client = QMPClient("raw")
    try:
        while not socket.exists():
            time.sleep(0.01)
        loop.run_until_complete(client.connect(str(socket)))
        return _timed(lambda: loop.run_until_complete(_workflow_raw(client)), traced)
    finally:
        loop.run_until_complete(client.disconnect())
        loop.close()
        process.terminate()


def _timed(function: Callable[[], None], traced: bool) -> tuple[float | None, int | None]:
    """One round: its time, or (``traced``) its Python peak memory. Not both at once: tracemalloc slows every
    allocation, so it would charge the side that runs more Python with time that is the tracer's, not its own."""
    if traced:
        tracemalloc.start()
        function()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return None, peak
    started = time.perf_counter()
    function()
    return time.perf_counter() - started, None


def _traced(round_number: int) -> bool:
    """Every third round measures memory; the others measure time."""
    return round_number % 3 == 2


def bench_workflow(root: Path) -> list[dict]:
    """Median time and Python peak memory of the seed workflow: raw qemu.qmp vs toolkit (monitoring on/off)."""
    results: dict[str, list[tuple[float, int]]] = {
        "raw qemu.qmp": [],
        "qblocknb, monitoring on": [],
        "qblocknb, monitoring off": [],
    }
    with qb.Lab(root / "workflow") as lab:
        for number in range(WORKFLOW_ROUNDS):
            for variant in results:
                _fresh_base(lab)
                if variant == "raw qemu.qmp":
                    results[variant].append(run_raw(lab, _traced(number)))
                    continue
                vm = lab.launch("a.qcow2", name=f"q{len(lab.machines)}")
                vm.monitoring = variant.endswith("on")
                vm.query_status()  # the command list is fetched once per machine, outside the timing
                results[variant].append(_timed(lambda vm=vm: workflow_toolkit(vm, lab), _traced(number)))
                vm.quit()
    return _table(results, "raw qemu.qmp")


def bench_monitoring(root: Path, size_mb: int = 256) -> list[dict]:
    """A mirror of a fully written disk: does sampling query-block-jobs every 20 ms slow the job down?"""
    results: dict[str, list[tuple[float, int]]] = {"monitoring off": [], "monitoring on": []}
    with qb.Lab(root / "monitoring") as lab:
        lab.create("big.qcow2", size=f"{size_mb}M")
        lab.write("big.qcow2", 0, f"{size_mb}M", pattern=0x5A)
        for number in range(ROUNDS):
            for variant in results:
                lab.file("copy.qcow2").unlink(missing_ok=True)
                vm = lab.launch("big.qcow2", name=f"m{len(lab.machines)}")
                vm.monitoring = variant == "monitoring on"

                def mirror(vm: qb.Machine = vm) -> None:
                    job = vm.drive_mirror(device="node-A", target="copy.qcow2", sync="full", format="qcow2")
                    job.wait_ready(timeout=300)
                    job.cancel().wait(timeout=300)

                results[variant].append(_timed(mirror, _traced(number)))
                vm.quit()
    return _table(results, "monitoring off")


def _table(results: dict[str, list[tuple[float | None, int | None]]], baseline: str) -> list[dict]:
    def times(samples: list) -> list[float]:
        return [t for t, _ in samples if t is not None]

    def peaks(samples: list) -> list[int]:
        return [m for _, m in samples if m is not None]

    base_time = median(times(results[baseline]))
    base_mem = median(peaks(results[baseline]))
    rows = []
    for variant, samples in results.items():
        median_time = median(times(samples))
        median_mem = median(peaks(samples))
        rows.append(
            {
                "variant": variant,
                "median ms": round(median_time * 1000, 1),
                "p99 ms": round(p99(times(samples)) * 1000, 1),
                "time ratio": round(median_time / base_time, 2),
                "Python peak KiB": round(median_mem / 1024),
                "memory ratio": round(median_mem / base_mem, 2),
                "rounds": f"{len(times(samples))} timed, {len(peaks(samples))} traced",
            }
        )
    return rows
