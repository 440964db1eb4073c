"""Make the pictures of docs/views.md from a real run: the seed's chain through stream, commit and mirror.

Every step is verified (the guest still reads A, B, C, D's patterns) before
its picture is saved, so the images show what QEMU really did::

    .venv/bin/python docs/make_images.py        # writes docs/img/*.svg, *.png
"""

from __future__ import annotations

import time
from pathlib import Path

import qblocknb as qb
from qblocknb.model.predict import predict
from qblocknb.render import save as save_diagram
from qblocknb.teaching.seedchain import build_seed_chain, expected_view
from qblocknb.widgets.plots import plot_timeline

IMAGES = Path(__file__).resolve().parent / "img"


def save(name: str, chain_or_graph, **options) -> None:
    for suffix in (".svg", ".png"):
        save_diagram(chain_or_graph, IMAGES / f"{name}{suffix}", **options)
    print(f"  {name}: {chain_or_graph if isinstance(chain_or_graph, qb.Chain) else ''}")


def check(vm: qb.Machine, expected: str) -> qb.Chain:
    """The chain is the one expected and the guest reads every layer's pattern."""
    chain = vm.chain()
    assert str(chain) == expected, f"{chain} is not {expected}"
    assert vm.verify(expected_view("ABCD")), "the guest's data changed"
    return chain


def wait_until(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)


def main() -> None:
    IMAGES.mkdir(exist_ok=True)
    with qb.Lab() as lab:
        vm = build_seed_chain(lab)
        seed = check(vm, "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]")
        save("chain-seed", seed)

        preview = predict(
            seed,
            "blockdev-snapshot-sync",
            {"node-name": "node-D", "snapshot-file": "e.qcow2", "snapshot-node-name": "node-E"},
        )
        save("preview-snapshot", preview.after, diff_from=seed)
        preview = predict(seed, "block-commit", {"device": "node-D", "top-node": "node-C", "base-node": "node-A"})
        save("preview-commit-during", preview.during)
        save("preview-commit-after", preview.after, diff_from=seed)

        vm.block_dirty_bitmap_add(node="node-D", name="bm0")
        vm.write("virtio0", "3M", "192k", pattern=0xD4)  # D's own pattern again: the data stays, the bitmap fills
        save("chain-bitmap", check(vm, str(seed)))

        stream = vm.block_stream(device="node-C", base_node="node-A", job_id="job0", speed=256 << 10)
        wait_until(lambda: stream.offset > 0, "the stream to start copying")
        stream.pause()
        time.sleep(0.3)
        stream.resume()
        save("chain-stream-running", vm.chain())
        stream.set_speed(0)
        stream.wait()
        save("chain-after-stream", check(vm, "[a.qcow2] <-- [c.qcow2] <-- [d.qcow2]"), diff_from=seed)

        before_commit = vm.chain()
        commit = vm.block_commit(device="node-D", top_node="node-D", base_node="node-A", job_id="job1", speed=4 << 20)
        commit.wait_ready()
        save("chain-commit-ready", vm.chain())
        commit.complete()
        commit.wait()
        save("chain-after-commit", check(vm, "[a.qcow2]"), diff_from=before_commit)

        before_mirror = vm.chain()
        mirror = vm.drive_mirror(
            device="node-A", target="e.qcow2", node_name="node-E", sync="full", job_id="job2", speed=8 << 20
        )
        wait_until(lambda: mirror.offset > 0, "the mirror to start copying")
        save("chain-mirror-running", vm.chain())
        mirror.set_speed(0)
        mirror.wait_ready()
        mirror.complete()
        mirror.wait()
        save("chain-after-mirror", check(vm, "[e.qcow2]"), diff_from=before_mirror)

    with qb.Lab() as lab:
        timelines(lab)


def timelines(lab: qb.Lab) -> None:
    """Jobs that move tens of MiB under a speed limit, so that their curves have a shape."""
    MiB = 1 << 20
    lab.create("a.qcow2", size="64M")
    lab.write("a.qcow2", 0, "48M", pattern=0xA1)
    vm = lab.launch("a.qcow2", node_name="node-A")
    vm.blockdev_snapshot_sync(node_name="node-A", snapshot_file="b.qcow2", snapshot_node_name="node-B", format="qcow2")
    stream = vm.block_stream(device="node-B", job_id="stream0", speed=32 * MiB)
    stream.wait()
    vm.blockdev_snapshot_sync(node_name="node-B", snapshot_file="c.qcow2", snapshot_node_name="node-C", format="qcow2")
    vm.write("virtio0", 0, "16M", pattern=0xC3)
    commit = vm.block_commit(device="node-C", job_id="commit0", speed=16 * MiB)
    commit.wait_ready()
    commit.complete()
    commit.wait()
    mirror = vm.drive_mirror(device="node-B", target="m.qcow2", sync="full", job_id="mirror0", speed=32 * MiB)
    wait_until(lambda: mirror.progress > 0.4, "the mirror to be under way")
    mirror.pause()
    time.sleep(0.4)
    mirror.resume()
    mirror.wait_ready()
    time.sleep(0.3)
    mirror.cancel()
    mirror.wait()
    assert vm.read_matches("virtio0", 0, "16M", 0xC3) and vm.read_matches("virtio0", "16M", "32M", 0xA1)
    assert vm.compare("m.qcow2"), "the mirror is not a copy of the disk"
    plot_timeline([stream, commit, mirror]).savefig(IMAGES / "timeline.png", dpi=80)
    plot_timeline(mirror).savefig(IMAGES / "timeline-mirror.png", dpi=80)
    print("  timeline.png, timeline-mirror.png")
    print(vm.jobs[["id", "type", "outcome", "duration_s", "bytes", "mean_rate_Bps"]].to_string(index=False))


if __name__ == "__main__":
    main()
