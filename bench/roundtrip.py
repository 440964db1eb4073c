"""One QMP round trip (``query-block-jobs``) four ways, interleaved in blocks, in microseconds.

* ``vm.execute`` -- the toolkit's public call: schema check, keyword mapping, history record, the hop to the
  background loop thread and back;
* ``vm.query`` -- the toolkit's quiet call (no history record, no schema check);
* a bare ``qemu.qmp.QMPClient`` driven from another thread with ``asyncio.run_coroutine_threadsafe`` on a loop
  of its own (what any synchronous caller inside Jupyter must do: the legacy wrapper cannot run there);
* a bare ``QMPClient`` awaited on its own loop in the calling thread (``loop.run_until_complete``): the floor.

Each client has its own QEMU (three, started before any timing), each on its own small image::

    .venv/bin/python bench/roundtrip.py
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient
from stats import median, p99

import qblocknb as qb
from qblocknb.live import process as qemu_process

CALLS = 3000
BLOCK = 100
COMMAND = "query-block-jobs"
BASELINE = "bare QMPClient, same thread"


class BareClient:
    """A QEMU of its own and a bare QMPClient, on a loop in this thread or in a thread of its own."""

    def __init__(self, lab: qb.Lab, name: str, threaded: bool) -> None:
        lab.create(f"{name}.qcow2", size="16M")
        socket = lab.path / f"{name}.sock"
        socket.unlink(missing_ok=True)
        args = qemu_process.command_line(lab.file(f"{name}.qcow2"), "node-A", "qcow2", socket, None, None)
        self.process = qemu_process.QemuProcess(args, cwd=lab.path, log_stem=lab.path / name)
        self.loop = asyncio.new_event_loop()
        self.thread = None
        if threaded:
            self.thread = threading.Thread(target=self.loop.run_forever, name=f"bench-{name}", daemon=True)
            self.thread.start()
        self.client = QMPClient(name)
        deadline = time.monotonic() + 15
        while not socket.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.run(self.client.connect(str(socket)))

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Wait for one coroutine, on this thread's loop or on the loop thread."""
        if self.thread is None:
            return self.loop.run_until_complete(coroutine)
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def call(self) -> None:
        self.run(self.client.execute(COMMAND))

    def close(self) -> None:
        self.run(self.client.disconnect())
        if self.thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        self.loop.close()
        self.process.terminate()


def _block(call: Callable[[], object], count: int, into: list[float]) -> None:
    clock = time.perf_counter_ns
    for _ in range(count):
        started = clock()
        call()
        into.append((clock() - started) / 1000)


def bench_roundtrip(root: Path, calls: int = CALLS, block: int = BLOCK) -> tuple[list[dict], list[dict], dict]:
    """The round-trip table, a profile of vm.execute's caller thread, and the raw figures for the text."""
    with qb.Lab(root / "roundtrip") as lab:
        lab.create("toolkit.qcow2", size="16M")
        vm = lab.launch("toolkit.qcow2", name="toolkit")
        vm.query_status()  # the command list is fetched once per machine, outside the timing
        same = BareClient(lab, "same", threaded=False)
        other = BareClient(lab, "other", threaded=True)
        try:
            variants: dict[str, Callable[[], object]] = {
                "vm.execute (toolkit, recorded)": lambda: vm.execute(COMMAND),
                "vm.query (toolkit, quiet)": lambda: vm.query(COMMAND),
                "bare QMPClient, other thread (run_coroutine_threadsafe)": other.call,
                BASELINE: same.call,
            }
            samples: dict[str, list[float]] = {name: [] for name in variants}
            for call in variants.values():  # warm-up, untimed
                _block(call, block, [])
            for _ in range(calls // block):
                for name, call in variants.items():
                    _block(call, block, samples[name])
            profile = _profile(lambda: vm.execute(COMMAND), calls // 3, PROFILE_ROWS)
            profile += _profile(same.call, calls // 3, BARE_PROFILE_ROWS)
        finally:
            same.close()
            other.close()
    base = median(samples[BASELINE])
    rows = [
        {
            "variant": name,
            "median µs": f"{median(values):.0f}",
            "p99 µs": f"{p99(values):.0f}",
            "ratio (median)": f"{median(values) / base:.2f}x",
            "calls": len(values),
        }
        for name, values in samples.items()
    ]
    figures = {name: median(values) for name, values in samples.items()}
    return rows, profile, figures


# Where the caller thread spends a vm.execute: (label, how to find it in the profile)
PROFILE_ROWS = [
    ("Machine.execute, whole call", ("machine.py", "execute")),
    ("  Session.execute (history record + hop)", ("session.py", "execute")),
    ("    History.start (record the command)", ("history.py", "start")),
    ("    loop.run: hand to the loop thread, wait", ("loop.py", "run")),
    ("      waiting for the loop thread's answer", ("threading.py", "wait")),
    ("    History.finish", ("history.py", "finish")),
]
# Where the bare same-thread client spends its round trip: asleep in epoll (QEMU, kernel) or in qemu.qmp's Python
BARE_PROFILE_ROWS = [
    ("bare same-thread client, whole call", ("base_events.py", "run_until_complete")),
    ("  asleep in epoll: QEMU answering, socket, wake-up", ("~", "<method 'poll' of 'select.epoll' objects>")),
]


def _profile(call: Callable[[], object], count: int, layers: list[tuple[str, tuple[str, str]]]) -> list[dict]:
    """cProfile of ``count`` calls on the caller thread: per-call µs spent in each layer (cumulative time).

    cProfile slows Python code down, so these figures exceed the table's; their differences show the layers.
    """
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        call()
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # {(file, line, function): (cc, nc, tottime, cumtime, callers)}
    rows = []
    for label, (file, function) in layers:
        cumulative = sum(v[3] for k, v in stats.items() if k[0].endswith(file) and k[2] == function)
        rows.append({"layer (cProfile, caller thread)": label, "µs per call": f"{cumulative / count * 1e6:.0f}"})
    return rows


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="qblocknb-bench-rt-") as folder:
        rows, profile, _ = bench_roundtrip(Path(folder))
    for row in rows + profile:
        print(row)


if __name__ == "__main__":
    main()
