"""Make the pictures of docs/debugging.md from a real run: the full block graph of the seed's chain.

A throttled blockdev-backup is drawn while it runs (from ``x-debug-query-block-graph``, and again from
``query-named-block-nodes``), then a refused backup's permission conflict on its edge; each backup is
checked (the target reads A, B, C, D's patterns) and the chain is the seed's again at the end::

    .venv/bin/python docs/make_debug_images.py        # writes docs/img/fullgraph-*.svg
"""

from __future__ import annotations

from pathlib import Path

import qblocknb as qb
from qblocknb.live.graphreader import read_block_graph
from qblocknb.model.permissions import permission_conflict
from qblocknb.render import save
from qblocknb.teaching.seedchain import build_seed_chain, expected_view

IMAGES = Path(__file__).resolve().parent / "img"
SEED = "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]"


def main() -> None:
    with qb.Lab() as lab:
        vm = build_seed_chain(lab)
        lab.create("target.qcow2", size="64M")
        vm.blockdev_add(driver="qcow2", node_name="target", file={"driver": "file", "filename": "target.qcow2"})
        job = vm.blockdev_backup(device="node-D", target="target", sync="full", job_id="job0", speed=1)
        save(read_block_graph(vm), IMAGES / "fullgraph-backup.svg", title="a blockdev-backup running")
        save(read_block_graph(vm, source="query-named-block-nodes"), IMAGES / "fullgraph-backup-named.svg")
        job.set_speed(0)
        job.wait(timeout=60)
        assert vm.verify(expected_view("ABCD"), image="target.qcow2")
        try:
            vm.send("blockdev-backup", {"device": "node-D", "target": "node-B", "sync": "full", "job-id": "job1"})
        except qb.CommandError as refused:
            conflict = permission_conflict(refused.desc)
            print(refused, conflict.todo(), sep="\n")
        else:
            raise AssertionError("QEMU took a backup into a node of the chain")
        assert str(vm.chain()) == SEED and vm.verify(expected_view("ABCD"))
        save(read_block_graph(vm), IMAGES / "fullgraph-conflict.svg", title=conflict.todo(), conflict=conflict)


if __name__ == "__main__":
    main()
