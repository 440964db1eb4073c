"""Every node QEMU has open, as plain data: devices, formats, protocols, filters, jobs and exports.

The chain (``model/chain.py``) is what a person reasons about; a job's filter node, a protocol node, an NBD
export or a permission that blocks a command only show in the whole graph.  ``BlockGraph`` is built from
``x-debug-query-block-graph`` (child roles and permissions known), or from ``query-named-block-nodes`` where
QEMU lacks it (edges guessed from file names, roles and permissions unknown); ``source`` says which::

    >>> graph = BlockGraph.from_debug_graph(
    ...     {"nodes": [{"id": 1, "type": "block-backend", "name": "/machine/peripheral/virtio0/virtio-backend"},
    ...                {"id": 2, "type": "block-driver", "name": "node-A"}],
    ...      "edges": [{"parent": 1, "child": 2, "name": "root", "perm": ["write"], "shared-perm": []}]},
    ...     named_nodes=[{"node-name": "node-A", "drv": "qcow2", "file": "a.qcow2"}],
    ...     blocks=[{"device": "", "qdev": "/machine/peripheral/virtio0/virtio-backend"}])
    >>> [(n.name, n.kind) for n in graph.nodes], graph.edges[0].role
    ([('virtio0', 'device'), ('node-A', 'format')], 'root')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from qblocknb.model.chain import FILTER_DRIVERS, PROTOCOL_DRIVERS, device_id, same_file

DEBUG_SOURCE = "x-debug-query-block-graph"
NAMED_SOURCE = "query-named-block-nodes"
KINDS = ("device", "format", "protocol", "filter", "job", "export", "backend")


@dataclass(frozen=True)
class GraphNode:
    """One node of the block graph; ``key`` is unique in its graph, ``name`` is what QEMU calls it."""

    key: str
    name: str
    kind: str  # one of KINDS
    driver: str = ""  # qcow2, file, copy-before-write, ...; a job's type; an export's type
    file: str = ""


@dataclass(frozen=True)
class GraphEdge:
    """A parent using a child; ``perm``/``shared`` are None where the source does not say (then role may be too)."""

    parent: str  # node keys
    child: str
    role: str | None
    perm: tuple[str, ...] | None = None
    shared: tuple[str, ...] | None = None


@dataclass(frozen=True)
class BlockGraph:
    """The whole block graph of one QEMU at one moment, and the query it came from."""

    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]
    source: str

    def node(self, name: str) -> GraphNode | None:
        """The node QEMU calls ``name`` (a node name, a device, a job id or an export id)."""
        return next((n for n in self.nodes if n.name == name), None)

    def of_kind(self, kind: str) -> list[GraphNode]:
        return [n for n in self.nodes if n.kind == kind]

    def edge(self, parent: str, child: str) -> GraphEdge | None:
        """The edge from the node named ``parent`` to the node named ``child``."""
        keys = {n.key: n.name for n in self.nodes}
        return next((e for e in self.edges if (keys[e.parent], keys[e.child]) == (parent, child)), None)

    def children(self, name: str) -> list[str]:
        """Names of the nodes ``name`` uses."""
        keys = {n.key: n.name for n in self.nodes}
        found = self.node(name)
        return [keys[e.child] for e in self.edges if found is not None and e.parent == found.key]

    @property
    def permissions_known(self) -> bool:
        return self.source == DEBUG_SOURCE

    @classmethod
    def from_debug_graph(
        cls,
        graph: dict,
        named_nodes: list[dict],
        blocks: list[dict],
        jobs: Sequence[dict] = (),
        exports: Sequence[dict] = (),
    ) -> BlockGraph:
        """From ``x-debug-query-block-graph``, named with the other queries' answers (its ids change per call)."""
        drivers = {n["node-name"]: n for n in named_nodes}
        devices = {b.get("qdev") or b.get("device"): device_id(b) for b in blocks}
        job_types = {j["device"]: j["type"] for j in jobs}
        children = {e["parent"]: e["child"] for e in graph["edges"]}
        names = {n["id"]: n["name"] for n in graph["nodes"]}
        exported = {e["node-name"]: e for e in exports}
        nodes = []
        for raw in sorted(graph["nodes"], key=lambda n: n["id"]):
            key, name = f"g{raw['id']}", raw["name"]
            if raw["type"] == "block-job":
                nodes.append(GraphNode(key, name, "job", job_types.get(name, "")))
            elif raw["type"] == "block-backend" and name in devices:
                nodes.append(GraphNode(key, devices[name], "device"))
            elif raw["type"] == "block-backend":
                export = exported.get(names.get(children.get(raw["id"]), ""))
                if export is not None:
                    nodes.append(GraphNode(key, export["id"], "export", export.get("type", "")))
                else:
                    nodes.append(GraphNode(key, name or "(backend)", "backend"))
            else:
                info = drivers.get(name, {})
                nodes.append(
                    GraphNode(key, name, driver_kind(info.get("drv", "")), info.get("drv", ""), info.get("file", ""))
                )
        edges = tuple(
            GraphEdge(f"g{e['parent']}", f"g{e['child']}", e["name"], tuple(e["perm"]), tuple(e["shared-perm"]))
            for e in graph["edges"]
        )
        return cls(tuple(nodes), edges, DEBUG_SOURCE)

    @classmethod
    def from_named_nodes(
        cls, named_nodes: list[dict], blocks: list[dict], jobs: Sequence[dict] = (), exports: Sequence[dict] = ()
    ) -> BlockGraph:
        """From ``query-named-block-nodes`` alone: edges follow ``children`` where QEMU lists them, else file
        names (a format over the protocol node of its file, a filter over the format node of its file, an
        overlay over the node of its backing file); permissions are unknown, and so are roles that were guessed.
        """
        nodes = [
            GraphNode(f"n{i}", n["node-name"], driver_kind(n["drv"]), n["drv"], n["file"])
            for i, n in enumerate(named_nodes)
        ]
        key = {n.name: n.key for n in nodes}
        edges = [e for raw in named_nodes for e in _guessed_children(raw, named_nodes, key)]
        users = [
            GraphNode(f"d{i}", device_id(b), "device") for i, b in enumerate(b for b in blocks if b.get("inserted"))
        ]
        used = [[b["inserted"]["node-name"]] for b in blocks if b.get("inserted")]
        users += [GraphNode(f"e{i}", e["id"], "export", e.get("type", "")) for i, e in enumerate(exports)]
        used += [[e["node-name"]] for e in exports]
        users += [GraphNode(f"j{i}", j["device"], "job", j["type"]) for i, j in enumerate(jobs)]
        used += [list(j.get("nodes", ())) for j in jobs]  # query-block-jobs names none: what the caller knows
        for user, names in zip(users, used, strict=True):
            role = None if user.kind == "job" else "root"
            edges += [GraphEdge(user.key, key[name], role) for name in names if name in key]
        return cls(tuple(nodes + users), tuple(edges), NAMED_SOURCE)


def driver_kind(driver: str) -> str:
    """``format``, ``protocol`` or ``filter``, by the node's driver."""
    if driver in FILTER_DRIVERS:
        return "filter"
    return "protocol" if driver in PROTOCOL_DRIVERS else "format"


def _guessed_children(node: dict, nodes: list[dict], key: dict[str, str]) -> list[GraphEdge]:
    """A node's children: QEMU's own ``children`` list where it has one, else matched by file name."""
    parent = key[node["node-name"]]
    if "children" in node:
        return [GraphEdge(parent, key[c["node-name"]], c["child"]) for c in node["children"] if c["node-name"] in key]
    kind = driver_kind(node["drv"])
    wanted = {"format": "protocol", "filter": "format"}.get(kind)
    found = []
    if wanted:
        sharing = [n for n in nodes if same_file(n["file"], node["file"]) and driver_kind(n["drv"]) == wanted]
        role = "file" if kind == "format" else None
        found += [GraphEdge(parent, key[n["node-name"]], role) for n in sharing if n is not node][:1]
    backing = node.get("backing_file")
    if kind == "format" and backing:
        under = [n for n in nodes if driver_kind(n["drv"]) == "format" and same_file(n["file"], backing)]
        found += [GraphEdge(parent, key[n["node-name"]], "backing") for n in under][:1]
    return found
