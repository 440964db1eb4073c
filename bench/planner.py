"""The planner's search against chain length: the old exhaustive walk and the uniform-cost search, side by side.

.venv/bin/python bench/run.py --only planner   (replaces this section of docs/benchmarks.md)

The old search is the planner as it was before the uniform-cost search (commit 88a4dca's parent), read with
``git show`` at bench time into a folder of its own, so that both run in one process on the same chains.
Each chain keeps every other image (a gap to close between every two kept ones); with overlap, each two
neighbouring dropped images write the same block, so that the order of commits and streams changes the bytes.
"""

from __future__ import annotations

import importlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType

from qblocknb.model.chain import Chain
from qblocknb.model.planner import chain_from_notation, make_plan
from qblocknb.model.sizes import human_size

TITLE = "## The planner's search: exhaustive walk vs uniform-cost search"
OLD_COMMIT = "88a4dca~1"  # the last planner with the exhaustive walk
SIZES = (4, 8, 12, 16, 25, 50, 100)
ROUNDS = 3  # runs of the new search per chain (median reported)
OLD_CAP_S = 15.0  # an old run longer than this is stopped, and longer chains are not tried
MiB = 1 << 20


class _Stopped(Exception):
    pass


def chain_of(images: int, overlap: bool) -> tuple[Chain, dict, str]:
    """``images`` images keeping every other one; with ``overlap`` neighbouring dropped images share a block."""
    files = [f"i{number:03d}.qcow2" for number in range(images)]
    chain = chain_from_notation(" <-- ".join(f"[{file}]" for file in files))
    allocation = {
        file: [((number // 4) * MiB if overlap and number % 2 else (1000 + number) * MiB, MiB)]
        for number, file in enumerate(files)
    }
    return chain, allocation, " <-- ".join(f"[{file}]" for file in files[::2])


def load_old(folder: Path) -> ModuleType:
    """The old planner (and its moves), from git history, as a module of its own."""
    root = Path(__file__).resolve().parent.parent
    for name in ("planner", "planmoves"):
        text = subprocess.run(
            ["git", "-C", str(root), "show", f"{OLD_COMMIT}:qblocknb/model/{name}.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        text = text.replace("from qblocknb.model.planmoves import", "from old_planmoves import")
        (folder / f"old_{name}.py").write_text(text)
    sys.path.insert(0, str(folder))
    return importlib.import_module("old_planner")


def timed(call: Callable[[], object], cap: float | None = None) -> tuple[float, object]:
    """Seconds and result of ``call``; _Stopped if it runs past ``cap`` seconds."""

    def stop(_signum: int, _frame: object) -> None:
        raise _Stopped

    if cap:
        signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, cap)
    started = time.perf_counter()
    try:
        result = call()
    finally:
        if cap:
            signal.setitimer(signal.ITIMER_REAL, 0)
    return time.perf_counter() - started, result


def old_run(old: ModuleType, chain: Chain, allocation: dict, goal: str) -> dict:
    """The old planner's time, chains looked at (its walk's calls to moves) and the bytes of its plan."""
    counted = [0]
    original = old.moves

    def counting(*args: object) -> object:
        counted[0] += 1
        return original(*args)

    old.moves = counting
    try:
        seconds, plan = timed(lambda: old.make_plan(chain, goal, allocation), OLD_CAP_S)
    finally:
        old.moves = original
    return {"seconds": seconds, "chains": counted[0], "bytes": plan.cost.bytes}


def bench_planner() -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="qblocknb-bench-planner-") as folder:
        old = load_old(Path(folder))
        old_stopped: dict[bool, int] = {}
        for images in SIZES:
            for overlap in (False, True):
                chain, allocation, goal = chain_of(images, overlap)
                runs = [timed(partial(make_plan, chain, goal, allocation)) for _ in range(ROUNDS)]
                plan = runs[0][1]
                row = {
                    "images": images,
                    "overlap": "yes" if overlap else "no",
                    "new: ms (median)": f"{statistics.median(s for s, _ in runs) * 1000:.0f}",
                    "new: bytes": human_size(plan.cost.bytes),
                    "new: exact": "yes" if plan.exact else "no (limit)",
                }
                if overlap in old_stopped:
                    row |= {"old: ms": f"not run (over {OLD_CAP_S:.0f} s at {old_stopped[overlap]} images)"}
                    row |= {"old: chains expanded": "", "old: bytes": ""}
                else:
                    try:
                        found = old_run(old, chain, allocation, goal)
                        row |= {
                            "old: ms": f"{found['seconds'] * 1000:.0f}",
                            "old: chains expanded": f"{found['chains']:,}",
                            "old: bytes": human_size(found["bytes"]),
                        }
                    except _Stopped:
                        old_stopped[overlap] = images
                        row |= {"old: ms": f"over {OLD_CAP_S:.0f} s, stopped"}
                        row |= {"old: chains expanded": "", "old: bytes": ""}
                rows.append(row)
                print(row, flush=True)
    return rows


def section(command: str) -> str:
    """This benchmark's section of docs/benchmarks.md."""
    rows = bench_planner()
    columns = list(rows[0])
    table = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    table += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return (
        f"{TITLE}\n\n"
        f"Made by `{command}`. `make_plan` on chains of {', '.join(map(str, SIZES))} images keeping every other "
        "image (a gap to close between every two kept images, each image holding 1 MiB); with overlap, each two "
        "neighbouring dropped images write the same block, so that committing one gap before streaming the "
        "one below it saves bytes. *New* is the uniform-cost search (median of "
        f"{ROUNDS} runs); *old* is the exhaustive walk with its 10,000-chain budget, read from git history "
        f"(`git show {OLD_COMMIT}:qblocknb/model/planner.py`, and its planmoves.py) and run once per chain in the "
        f"same process; a run past {OLD_CAP_S:.0f} s is stopped. *Chains expanded* counts the old walk's "
        "calls to its moves() (the chains it went past, not the leaves); from 12 images on it stops at its "
        "budget and keeps the best plan found, which is why its bytes exceed the new search's on overlapping "
        "data.\n\n" + "\n".join(table) + "\n"
    )


if __name__ == "__main__":
    print(section(".venv/bin/python bench/planner.py"))
