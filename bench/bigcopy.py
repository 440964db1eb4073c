"""A monitored 1 GiB mirror against ``qemu-img convert`` of the same data: how close does a live copy driven by
the toolkit come to the plain offline copy of the same bytes?

The 1 GiB qcow2 is written once with ``qemu-io write -P`` (a different byte in each 128 MiB, so every cluster is
allocated and holds real data).  Each round, interleaved:

* ``drive-mirror sync=full`` to a new qcow2, with monitoring on (``query-block-jobs`` every 20 ms), timed from
  the command to READY and through ``cancel`` (which leaves the point-in-time copy) to the job's end; QEMU is
  started before the timing;
* ``qemu-img convert -O qcow2`` of the same image, with its default cache mode for the target;
* ``qemu-img convert -t writeback -O qcow2``: the cache mode QEMU's ``-blockdev`` default gives the mirror's target.

``sync`` runs after the source is written and after each copy is deleted, outside the timing, so that no round
pays for the kernel writing back another's dirty pages.  Every copy is deleted after its round, and the source
at the end::

    .venv/bin/python bench/bigcopy.py
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from stats import median, p99

import qblocknb as qb

SIZE_MB = 1024
SLICE_MB = 128
ROUNDS = 5
MIRROR = "drive-mirror sync=full, monitored (to READY, then cancel)"
CONVERT = "qemu-img convert -O qcow2 (default cache)"
CONVERT_WB = "qemu-img convert -t writeback -O qcow2"


def _copy_size(path: Path) -> int:
    """Bytes the copy takes on disk: it must be about the source's size, i.e. real data was copied."""
    return path.stat().st_blocks * 512


def bench_bigcopy(root: Path, size_mb: int = SIZE_MB, rounds: int = ROUNDS) -> tuple[list[dict], dict]:
    """The table, and figures for the text (timeline rows of the mirror, copy sizes)."""
    times: dict[str, list[float]] = {MIRROR: [], CONVERT: [], CONVERT_WB: []}
    sizes: dict[str, int] = {}
    rows_per_job: list[int] = []
    with qb.Lab(root / "bigcopy") as lab:
        lab.create("big.qcow2", size=f"{size_mb}M")
        for number, offset in enumerate(range(0, size_mb, SLICE_MB)):
            lab.write("big.qcow2", f"{offset}M", f"{min(SLICE_MB, size_mb - offset)}M", pattern=0x11 + number)
        source = lab.file("big.qcow2")
        os.sync()
        for _ in range(rounds):
            for variant in times:
                copy = lab.file("copy.qcow2")
                copy.unlink(missing_ok=True)
                if variant == MIRROR:
                    vm = lab.launch("big.qcow2", name=f"big{len(lab.machines)}")
                    vm.monitoring = True
                    vm.query_status()
                    started = time.perf_counter()
                    job = vm.drive_mirror(device="node-A", target=str(copy), sync="full", format="qcow2")
                    job.wait_ready(timeout=600)
                    job.cancel().wait(timeout=600)
                    times[variant].append(time.perf_counter() - started)
                    rows_per_job.append(len(job.timeline))
                    vm.quit()
                else:
                    cache = ["-t", "writeback"] if variant == CONVERT_WB else []
                    started = time.perf_counter()
                    subprocess.run(
                        ["qemu-img", "convert", *cache, "-O", "qcow2", str(source), str(copy)],
                        check=True,
                        capture_output=True,
                    )
                    times[variant].append(time.perf_counter() - started)
                sizes[variant] = _copy_size(copy)
                copy.unlink()
                os.sync()
        source_size = _copy_size(source)
        source.unlink()
    base = median(times[CONVERT])
    rows = []
    for variant, values in times.items():
        rows.append(
            {
                "copy": variant,
                "median s": f"{median(values):.2f}",
                "p99 s": f"{p99(values):.2f}",
                "MiB/s (median)": f"{size_mb / median(values):.0f}",
                "time vs convert": f"{median(values) / base:.2f}x",
                "throughput vs convert": f"{base / median(values):.2f}x",
                "copy on disk MiB": f"{sizes[variant] / (1 << 20):.0f}",
                "rounds": len(values),
            }
        )
    figures = {"source MiB": source_size / (1 << 20), "mirror timeline rows": rows_per_job}
    return rows, figures


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="qblocknb-bench-big-") as folder:
        rows, figures = bench_bigcopy(Path(folder))
    for row in rows:
        print(row)
    print(figures)


if __name__ == "__main__":
    main()
