"""The doctor's checks on the block graph: nodes nobody uses, NBD exports left behind, and dirty bitmaps.

A node that ``blockdev-add`` opened stays open until ``blockdev-del``, even when no device, job, export or
other node uses it (a mirror's or backup's target after the job): its file stays locked and its node name
taken. The graph (``x-debug-query-block-graph``) names every parent, so such a node has none::

    >>> from qblocknb.model.blockgraph import BlockGraph
    >>> graph = BlockGraph.from_debug_graph({"nodes": [{"id": 1, "type": "block-driver", "name": "target0"}],
    ...                                      "edges": []}, [{"node-name": "target0", "drv": "qcow2", "file": "e"}], [])
    >>> [(f.subject, str(f.fix)) for f in graph_findings(Observed(graph=graph))]
    [('target0', 'blockdev-del node-name=target0')]
"""

from __future__ import annotations

from qblocknb.model.blockgraph import BlockGraph
from qblocknb.model.chain import Chain, display_name
from qblocknb.model.doctor import Finding, Fix, Observed

NODE_KINDS = ("format", "filter", "protocol")
RUNNING = ("created", "running", "paused", "ready", "standby", "waiting", "pending", "aborting")


def graph_findings(seen: Observed) -> list[Finding]:
    """Orphan nodes, exports, and bitmaps that will not do what their owner expects."""
    return [*_orphans(seen), *_exports(seen), *_bitmaps(seen)]


def _orphans(seen: Observed) -> list[Finding]:
    graph = seen.graph
    if graph is None or (not graph.permissions_known and seen.block_jobs):  # a job's nodes are only guessed
        return []
    used = {edge.child for edge in graph.edges}
    found = []
    for node in graph.nodes:
        if node.kind not in NODE_KINDS or node.key in used or node.name.startswith("#") or not node.name:
            continue
        found.append(
            Finding(
                "warning",
                "node",
                node.name,
                f"node {node.name} ({display_name(node.file) if node.file else node.driver}) is open but no "
                "device, job, export or other node uses it",
                "a node added with blockdev-add or -blockdev (a finished mirror's or backup's target, a base "
                "streamed out) keeps its file open and locked and its node name taken until blockdev-del",
                "delete it if nothing will use it again",
                Fix("delete the node", (("blockdev-del", {"node-name": node.name}),)),
                node.name,
            )
        )
    return found


def _exports(seen: Observed) -> list[Finding]:
    found = []
    for export in seen.exports:
        writable = _writable(seen.graph, export["id"])
        fix = _unexport(export)
        how = {True: "writable", False: "read-only", None: "possibly writable"}[writable]
        found.append(
            Finding(
                "error" if writable else "warning",
                "node",
                export["node-name"],
                f"node {export['node-name']} is exported over {export.get('type', 'nbd').upper()} as "
                f"'{export['id']}', {how}",
                "NBD has no authentication without TLS: whoever reaches the server can read the disk"
                + (" and overwrite it under the guest" if writable is not False else ""),
                "stop the NBD server (nbd-server-stop) unless a migration or backup is reading it right now",
                fix,
                export["node-name"],
            )
        )
    return found


def _unexport(export: dict) -> Fix:
    if export.get("type", "nbd") == "nbd":
        return Fix("stop the NBD server (it removes its exports)", (("nbd-server-stop", {}),))
    return Fix("remove the export", (("block-export-del", {"id": export["id"]}),))


def _writable(graph: BlockGraph | None, export_id: str) -> bool | None:
    """Whether the export's backend holds the write permission on its node; None when the graph does not say."""
    if graph is None or not graph.permissions_known:
        return None
    node = next((n for n in graph.nodes if n.kind == "export" and n.name == export_id), None)
    if node is None:
        return None
    return any("write" in (edge.perm or ()) for edge in graph.edges if edge.parent == node.key)


def _bitmaps(seen: Observed) -> list[Finding]:
    jobs_running = any(job.get("status") in RUNNING for job in seen.jobs)
    found = []
    for node in seen.nodes:
        for bitmap in node.get("dirty-bitmaps", []):
            if "name" in bitmap:
                chain = _chain_of(seen.chains, node["node-name"])
                holders = _exports_over(seen.exports, node["node-name"], chain)
                found += _bitmap(node["node-name"], bitmap, chain, jobs_running, holders)
    return found


def _exports_over(exports: list[dict], node: str, chain: Chain | None) -> list[dict]:
    """The exports of ``node`` or of a layer above it: an NBD export publishes bitmaps found down its chain, and
    holds them busy while it lives (measured on 7.2; query-block-exports does not say which)."""
    names = [image.node_name for image in chain.images] if chain is not None else [node]
    above = names[names.index(node) :] if node in names else [node]
    return [export for export in exports if export.get("node-name") in above]


def _bitmap(node: str, bitmap: dict, chain: Chain | None, jobs_running: bool, holders: list[dict]) -> list[Finding]:
    name = bitmap["name"]
    subject = f"{name} on {node}"
    remove = Fix("remove the bitmap", (("block-dirty-bitmap-remove", {"node": node, "name": name}),))
    if bitmap.get("inconsistent"):
        return [
            Finding(
                "error",
                "bitmap",
                subject,
                f"bitmap {name} on {node} is inconsistent",
                "QEMU was not shut down cleanly while it was in use, so it may miss writes: an incremental "
                "backup from it would silently lack data",
                "remove it, add a new one, and take a full backup before the next incremental",
                remove,
                node,
            )
        ]
    if bitmap.get("busy"):
        if jobs_running:
            return []  # a running backup or mirror holds it: that is its job
        exports = " or ".join(f"{e.get('type', 'nbd').upper()} export '{e['id']}' of {e['node-name']}" for e in holders)
        return [
            Finding(
                "warning",
                "bitmap",
                subject,
                f"bitmap {name} on {node} is busy with no job running"
                + (f": {exports} may publish it (block-export-add bitmaps=...)" if holders else ""),
                'a busy bitmap is refused by every command ("Bitmap ... is currently in use")',
                "end the export once its reader is done"
                if holders
                else "look for an NBD export or a job of another client holding it (query-block-exports, query-jobs)",
                _unexport(holders[0]) if holders else None,
                node,
            )
        ]
    found = []
    if not bitmap.get("recording", True):
        found.append(
            Finding(
                "warning",
                "bitmap",
                subject,
                f"bitmap {name} on {node} is disabled: it records no writes",
                "an incremental backup from it would miss every write made since it was disabled",
                "enable it if it should track writes (then take a full backup), or remove it",
                Fix("enable the bitmap", (("block-dirty-bitmap-enable", {"node": node, "name": name}),)),
                node,
            )
        )
    if chain is not None and chain.active.node_name != node and not _has(chain.active.node_name, name, chain):
        found.append(_stranded(node, bitmap, chain))
    return found


def _stranded(node: str, bitmap: dict, chain: Chain) -> Finding:
    name, active = bitmap["name"], chain.active.node_name or chain.active.name
    add = {"node": active, "name": name, "persistent": bool(bitmap.get("persistent"))}
    if bitmap.get("granularity"):
        add["granularity"] = bitmap["granularity"]
    return Finding(
        "warning",
        "bitmap",
        f"{name} on {node}",
        f"bitmap {name} is on {node}, below the active layer {active} of {chain.device or 'the disk'}",
        "the guest writes into the active layer, so it records nothing now, and the next incremental backup "
        f"of {chain.device or 'the disk'} will not find a bitmap {name} there",
        f"add a bitmap {name} on {active} and take a full backup before the next incremental",
        Fix(f"add {name} on the active layer", (("block-dirty-bitmap-add", add),)),
        node,
    )


def _chain_of(chains: tuple[Chain, ...], node: str) -> Chain | None:
    return next((chain for chain in chains if chain.find(node) is not None), None)


def _has(node: str | None, name: str, chain: Chain) -> bool:
    image = chain.find(node) if node else None
    return image is not None and any(b.name == name for b in image.bitmaps)
