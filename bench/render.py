"""Redraw times of chains of 4, 50, 200 and 1,000 images, building separated from layout, and of the seed's chain
read from a real QEMU.

*Building* is ``qblocknb.render.render(chain)``: the Chain model to a ``graphviz.Digraph`` (Python only).
*Layout* is graphviz's ``dot`` turning that prebuilt graph into SVG (``svg(graph)``) or PNG.  Each hand-built
size is drawn twice: with a commit job running from the top to the base (its labelled arrow spans the whole
chain) and with no job.  Variants are interleaved round by round so that drift hits them alike; the table gives
medians and 99th percentiles in milliseconds::

    .venv/bin/python bench/render.py
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from stats import median, p99

import qblocknb as qb
from qblocknb.errors import ToolError
from qblocknb.model.chain import Bitmap, Chain, Image, JobInfo, RetiredImage
from qblocknb.render import png, render, svg, text
from qblocknb.teaching.seedchain import build_seed_chain

SIZES = (4, 50, 200, 1000)
ROUNDS = 7
MiB = 1 << 20


def hand_chain(length: int, job: bool = True) -> Chain:
    """``length`` qcow2 layers with a bitmap on the top, two retired images, and (if ``job``) a commit running
    from the top layer to the base."""
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
    commit = JobInfo("job0", "commit", "running", MiB, 4 * MiB, images[-1].node_name, images[0].node_name)
    retired = (
        RetiredImage("old1.qcow2", "node-old1", "stream", True, "still valid: a point in time; safe to delete or keep"),
        RetiredImage("old2.qcow2", "node-old2", "commit", False, "invalid: do not use"),
    )
    return Chain(tuple(images), device="virtio0", jobs=(commit,) if job else (), retired=retired)


def _ms(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def bench_render(rounds: int = ROUNDS) -> tuple[list[dict], dict[str, str]]:
    """One row per chain: build (median, p99), SVG and PNG layout of the prebuilt graph, text; and, per chain,
    the error of a layout that failed (graphviz crashed), which is then not tried again."""
    chains = {}
    for size in SIZES:
        chains[f"{size} images, commit top → base"] = hand_chain(size)
        chains[f"{size} images, no job"] = hand_chain(size, job=False)
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="qblocknb-bench-render-") as folder, qb.Lab(Path(folder)) as lab:
        vm = build_seed_chain(lab)
        chains["seed chain from QEMU"] = vm.chain()
        times: dict[str, dict[str, list[float]]] = {name: {} for name in chains}
        for _ in range(rounds):
            for name, chain in chains.items():
                graph = render(chain)
                steps = {
                    "build": lambda chain=chain: render(chain),
                    "SVG": lambda graph=graph: svg(graph),
                    "PNG": lambda graph=graph: png(graph),
                    "text": lambda chain=chain: text(chain),
                }
                if name == "seed chain from QEMU":
                    steps["vm.chain()"] = vm.chain
                for step, action in steps.items():
                    if step in ("SVG", "PNG") and name in failed:
                        continue
                    try:
                        times[name].setdefault(step, []).append(_ms(action))
                    except ToolError as error:
                        failed[name] = str(error).split(":", 1)[-1].strip()[:120]
    rows = []
    for name, steps in times.items():
        rows.append(
            {
                "chain": name,
                "build median ms": _figure(steps, "build", median, 2),
                "build p99 ms": _figure(steps, "build", p99, 2),
                "SVG layout median ms": _figure(steps, "SVG", median, 1) or "dot crashed",
                "SVG layout p99 ms": _figure(steps, "SVG", p99, 1) or "dot crashed",
                "PNG median ms": _figure(steps, "PNG", median, 1) or "dot crashed",
                "text median ms": _figure(steps, "text", median, 2),
                "vm.chain() median ms": _figure(steps, "vm.chain()", median, 1),
                "rounds": len(steps["build"]),
            }
        )
    return rows, failed


def _figure(steps: dict[str, list[float]], step: str, statistic: Callable, digits: int) -> str:
    return f"{statistic(steps[step]):.{digits}f}" if steps.get(step) else ""


def main() -> None:
    rows, failed = bench_render()
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(row[c])) for row in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))
    for name, error in failed.items():
        print(f"{name}: {error}")


if __name__ == "__main__":
    main()
