"""Render times of chains of 4, 50 and 200 images, and of the seed's chain read from a real QEMU.

Sizes are interleaved round by round so that drift hits them alike; the table
gives medians in milliseconds and each size's ratio to the 4-image chain::

    .venv/bin/python bench/render.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import qblocknb as qb
from qblocknb.chain import Bitmap, Chain, Image, JobInfo, RetiredImage
from qblocknb.render import png, render, svg, text
from qblocknb.seedchain import build_seed_chain

SIZES = (4, 50, 200)
ROUNDS = 5
MiB = 1 << 20


def hand_chain(length: int) -> Chain:
    """``length`` qcow2 layers with a bitmap on the top, a commit running over the chain and two retired images."""
    images = []
    for number in range(length):
        images.append(
            Image(
                f"layer{number:03}.qcow2",
                "qcow2",
                64 * MiB,
                MiB + number * 4096,
                node_name=f"node-{number:03}",
                backing_file=f"layer{number - 1:03}.qcow2" if number else None,
                device="virtio0" if number == length - 1 else None,
                bitmaps=(Bitmap("bm0", 65536, 3 * 65536),) if number == length - 1 else (),
            )
        )
    job = JobInfo("job0", "commit", "running", MiB, 4 * MiB, images[-1].node_name, images[0].node_name)
    retired = (
        RetiredImage("old1.qcow2", "node-old1", "stream", True, "still valid: a point in time; safe to delete or keep"),
        RetiredImage("old2.qcow2", "node-old2", "commit", False, "invalid: do not use"),
    )
    return Chain(tuple(images), device="virtio0", jobs=(job,), retired=retired)


def _ms(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def bench_render(rounds: int = ROUNDS) -> list[dict]:
    """One row per chain: graph building, SVG, PNG and text times (median ms), SVG ratio to 4 images."""
    chains = {f"{size} images (hand-built)": hand_chain(size) for size in SIZES}
    with tempfile.TemporaryDirectory(prefix="qblocknb-bench-render-") as folder, qb.Lab(Path(folder)) as lab:
        vm = build_seed_chain(lab)
        chains["seed chain from QEMU"] = vm.chain()
        times: dict[str, dict[str, list[float]]] = {name: {} for name in chains}
        for _ in range(rounds):
            for name, chain in chains.items():
                steps = {
                    "graph": lambda chain=chain: render(chain),
                    "SVG": lambda chain=chain: svg(chain),
                    "PNG": lambda chain=chain: png(chain),
                    "text": lambda chain=chain: text(chain),
                }
                if name == "seed chain from QEMU":
                    steps["vm.chain()"] = vm.chain
                for step, action in steps.items():
                    times[name].setdefault(step, []).append(_ms(action))
    baseline = statistics.median(times[f"{SIZES[0]} images (hand-built)"]["SVG"])
    rows = []
    for name, steps in times.items():
        medians = {step: statistics.median(values) for step, values in steps.items()}
        rows.append(
            {
                "chain": name,
                "build graph ms": f"{medians['graph']:.2f}",
                "SVG ms": f"{medians['SVG']:.1f}",
                "PNG ms": f"{medians['PNG']:.1f}",
                "text ms": f"{medians['text']:.2f}",
                "vm.chain() ms": f"{medians['vm.chain()']:.1f}" if "vm.chain()" in medians else "",
                "SVG vs 4 images": f"{medians['SVG'] / baseline:.1f}x",
            }
        )
    return rows


def main() -> None:
    rows = bench_render()
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(row[c]) for row in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(row[c].ljust(widths[c]) for c in columns))


if __name__ == "__main__":
    main()
