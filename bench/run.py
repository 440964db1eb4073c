"""Run every benchmark in one go and write docs/benchmarks.md.

.venv/bin/python bench/run.py        (or: make bench)
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import core  # noqa: E402
import render as render_bench  # noqa: E402

from qblocknb.process import kvm_usable  # noqa: E402

REPORT = HERE.parent / "docs" / "benchmarks.md"


def machine_line() -> str:
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    accel = "KVM" if kvm_usable() else "TCG"
    return f"{cpu} ({os.cpu_count()} cores), Python {platform.python_version()}, {qemu}, accelerator {accel}"


def markdown(rows: list[dict]) -> str:
    """A GitHub table from a list of dicts (pandas' to_markdown needs an extra package)."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def section(title: str, text: str, rows: list[dict]) -> str:
    return f"## {title}\n\n{text}\n\n{markdown(rows)}\n"


def main() -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="qblocknb-bench-") as folder:
        root = Path(folder)
        print("workflow: raw qemu.qmp vs qblocknb ...", flush=True)
        workflow = core.bench_workflow(root)
        print("monitoring: mirror of 256 MiB with and without sampling ...", flush=True)
        monitoring = core.bench_monitoring(root)
        print("rendering chains of 4, 50 and 200 images ...", flush=True)
        rendering = render_bench.bench_render()
    parts = [
        "# Benchmarks\n",
        "Made with `make bench` (which runs `.venv/bin/python bench/run.py`); every table comes from the same run, "
        "variants interleaved round by round, medians reported with the ratio to the first row.\n",
        f"Machine: {machine_line()}. Whole run: {time.monotonic() - started:.0f} s.\n",
        section(
            "Seed workflow: toolkit vs raw qemu.qmp",
            "Three `blockdev-snapshot-sync`, a `block-stream` of the whole chain into D waited to the end, and "
            "a `query-block-jobs`, on an 8 MiB-filled 64 MiB base (QEMU start-up not timed). The toolkit also "
            "reads the chain before the job (pre-flight checks) and records every command; `Python peak KiB` "
            "is tracemalloc's peak over the timed part. Most of the difference is those pre-flight reads (one "
            "`query-block` and one `query-named-block-nodes`, about 2.5 ms together, before each snapshot and the "
            "job) and the hop to the background loop thread that lets a notebook cell block while events flow; "
            "the price of refusing bad arguments with a sentence before QEMU sees them.",
            workflow,
        ),
        section(
            "Monitoring overhead on a long job",
            "`drive-mirror sync=full` of a fully written 256 MiB disk to READY, then cancel; "
            "with monitoring on, `query-block-jobs` is sampled every 20 ms to build `job.timeline`. "
            "Medians of interleaved rounds; differences of a few percent are within the run-to-run noise of "
            "this shared 2-core machine.",
            monitoring,
        ),
        section("Rendering", "Chain to SVG with graphviz `dot`, hand-built chains of growing length.", rendering),
    ]
    REPORT.write_text("\n".join(parts))
    print(REPORT.read_text())


if __name__ == "__main__":
    main()
