"""``read_block_graph(vm)``: the whole block graph of one QEMU, from the best query it has.

``x-debug-query-block-graph`` gives every edge with its child role and permissions; a QEMU without it (or
``source="query-named-block-nodes"``) gives nodes only, and the graph says so.  All queries are quiet: a
look at the graph is not part of ``vm.history``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from qblocknb.errors import InputError
from qblocknb.live.ports import Querier
from qblocknb.model.blockgraph import DEBUG_SOURCE, NAMED_SOURCE, BlockGraph

if TYPE_CHECKING:
    from qblocknb.live.jobs import Job

SOURCES = (DEBUG_SOURCE, NAMED_SOURCE)


class GraphSource(Querier, Protocol):
    """A QEMU's quiet queries, and this session's jobs: without the debug graph, they say which nodes a job holds."""

    @property
    def job_list(self) -> list[Job]: ...


def read_block_graph(vm: GraphSource, source: str | None = None) -> BlockGraph:
    """The block graph now; ``source`` forces one of ``SOURCES`` (default: the debug graph where QEMU has it)."""
    if source not in (None, *SOURCES):
        raise InputError(f"unknown block graph source {source!r}", "", f"use one of {', '.join(SOURCES)}")
    if source is None:
        source = DEBUG_SOURCE if vm.has_command(DEBUG_SOURCE) else NAMED_SOURCE
    if source == DEBUG_SOURCE and not vm.has_command(DEBUG_SOURCE):
        raise InputError(f"this QEMU has no {DEBUG_SOURCE}", "it is not in query-commands", f"use {NAMED_SOURCE}")
    nodes = vm.query("query-named-block-nodes", {"flat": True})
    blocks = vm.query("query-block")
    jobs = vm.query("query-block-jobs")
    exports = vm.query("query-block-exports") if vm.has_command("query-block-exports") else []
    if source == DEBUG_SOURCE:
        return BlockGraph.from_debug_graph(vm.query(DEBUG_SOURCE), nodes, blocks, jobs, exports)
    held = {job.id: [n for n in (job.source, job.target) if n] for job in vm.job_list}
    jobs = [{**job, "nodes": held.get(job["device"], [])} for job in jobs]
    return BlockGraph.from_named_nodes(nodes, blocks, jobs, exports)
