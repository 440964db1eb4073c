"""How much a long job's ``timeline`` holds: rows and bytes for a throttled mirror left running about 45 s and then
sitting in READY about 15 s, with monitoring on, extrapolated to one hour of each.

While a job runs, ``query-block-jobs`` is sampled every 20 ms (``JobRegistry.SAMPLE_INTERVAL``) and each sample is
a row; in READY, standby or paused an unchanged sample adds at most one row a second (``jobstate.IDLE_ROW_GAP``).
Bytes per row are measured three ways: the Python objects the rows hold (dicts and the values no other row
shares), tracemalloc's growth of the whole process over the phase, and the ``job.timeline`` DataFrame a reader
builds from them (``memory_usage(deep=True)``)::

    .venv/bin/python bench/timeline.py
"""

from __future__ import annotations

import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import qblocknb as qb
from qblocknb.model.jobstate import JobState

DATA_MB = 45
SPEED = 1 << 20  # bytes per second: about DATA_MB seconds running
READY_S = 15.0
HOUR = 3600.0


def rows_size(rows: list[dict]) -> int:
    """Bytes of the list, its row dicts and every value object that is not a shared singleton."""
    seen: set[int] = set()
    total = sys.getsizeof(rows)
    for row in rows:
        total += sys.getsizeof(row)
        for value in row.values():
            if value is None or isinstance(value, bool) or (isinstance(value, int) and -5 <= value <= 256):
                continue
            if id(value) not in seen:
                seen.add(id(value))
                total += sys.getsizeof(value)
    return total


def frame_cost(rows: list[dict], count: int) -> tuple[float, int]:
    """Milliseconds and bytes of ``job.timeline`` for ``count`` rows like these (what a plot redraw reads)."""
    state = JobState("job0", "drive-mirror", {}, None)
    state._samples = [rows[i % len(rows)] for i in range(count)]
    started = time.perf_counter()
    frame = state.timeline
    return (time.perf_counter() - started) * 1000, int(frame.memory_usage(deep=True).sum())


def replay_hour(rows: list[dict], rate: float) -> tuple[int, int, float]:
    """Feed one hour of running samples at ``rate`` rows/s through the pure ``JobState`` (recorded rows, offsets
    growing): rows kept, their bytes, and the seconds the replay took (the thinning included)."""
    state = JobState("job0", "drive-mirror", {}, None, started=0.0)
    count = round(rate * HOUR)
    started = time.perf_counter()
    for number in range(count):
        sample = {**rows[number % len(rows)], "status": "running", "offset": number * 4096, "len": count * 4096}
        state.apply_sample(sample, number / rate)
    elapsed = time.perf_counter() - started
    return len(state._samples), rows_size(list(state._samples)), elapsed


def bench_timeline(
    root: Path, data_mb: int = DATA_MB, speed: int = SPEED, ready_s: float = READY_S
) -> tuple[list[dict], dict]:
    """One row per phase (running, READY): seconds, rows, rows/s, bytes per row, and one hour's worth; and the
    cost of building ``job.timeline`` from one hour of running rows."""
    with qb.Lab(root / "timeline") as lab:
        lab.create("slow.qcow2", size=f"{data_mb + 16}M")
        lab.write("slow.qcow2", 0, f"{data_mb}M", pattern=0x77)
        vm = lab.launch("slow.qcow2")
        vm.monitoring = True
        vm.query_status()
        tracemalloc.start()
        started = time.monotonic()
        base_memory = tracemalloc.get_traced_memory()[0]
        job = vm.drive_mirror(device="node-A", target="slow-copy.qcow2", sync="full", format="qcow2", speed=speed)
        job.wait_ready(timeout=10 * data_mb * (1 << 20) / speed)
        ready_at = time.monotonic()
        running_rows = len(job._samples)
        running_memory = tracemalloc.get_traced_memory()[0] - base_memory
        running_bytes = rows_size(list(job._samples))
        running_frame = int(job.timeline.memory_usage(deep=True).sum())
        time.sleep(ready_s)
        ready_rows = len(job._samples) - running_rows
        ready_memory = tracemalloc.get_traced_memory()[0] - base_memory - running_memory
        ready_bytes = rows_size(list(job._samples)) - running_bytes
        ended_at = time.monotonic()
        tracemalloc.stop()
        job.cancel().wait(timeout=60)
        vm.quit()
    hour_rows = round(running_rows / (ready_at - started) * HOUR)
    hour_ms, hour_bytes = frame_cost(list(job._samples), hour_rows)
    kept, kept_bytes, replay_s = replay_hour(list(job._samples), running_rows / (ready_at - started))
    phases = [
        ("running, throttled to 1 MiB/s", ready_at - started, running_rows, running_bytes, running_memory),
        ("READY, idle", ended_at - ready_at, ready_rows, ready_bytes, ready_memory),
    ]
    table = []
    for name, seconds, rows, size, traced in phases:
        per_row = size / rows if rows else 0.0
        rate = rows / seconds
        table.append(
            {
                "phase": name,
                "seconds": f"{seconds:.1f}",
                "timeline rows": rows,
                "rows/s": f"{rate:.1f}",
                "bytes/row (objects)": f"{per_row:.0f}",
                "tracemalloc growth KiB": f"{traced / 1024:.0f}",
                "rows in 1 h, unthinned": f"{rate * HOUR:,.0f}",
                "MiB in 1 h, unthinned": f"{rate * HOUR * per_row / (1 << 20):.1f}",
            }
        )
    frame_per_row = running_frame / running_rows if running_rows else 0.0
    table[0]["DataFrame bytes/row"] = f"{frame_per_row:.0f}"
    table[1]["DataFrame bytes/row"] = ""
    return table, {
        "hour rows": hour_rows,
        "hour frame ms": hour_ms,
        "hour frame MiB": hour_bytes / (1 << 20),
        "replay kept": kept,
        "replay MiB": kept_bytes / (1 << 20),
        "replay s": replay_s,
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="qblocknb-bench-timeline-") as folder:
        table, figures = bench_timeline(Path(folder), ready_s=float(sys.argv[1]) if len(sys.argv) > 1 else READY_S)
        for row in table:
            print(row)
        print(figures)


if __name__ == "__main__":
    main()
