"""``render_block_graph(graph)``: every node QEMU has open, as QEMU's own ``render_block_graph.py`` draws it.

Parents point at the children they use, top to bottom: devices and exports, the filters jobs insert,
format nodes, and their protocol nodes.  Each edge says the child's role and, where the graph came from
``x-debug-query-block-graph``, the permissions the parent takes and those it shares, abbreviated as the
legend says (``R`` consistent-read, ``W`` write, ``U`` write-unchanged, ``S`` resize).  ``conflict=``
draws one edge in red: the one a permission conflict names.
"""

from __future__ import annotations

import graphviz

from qblocknb.model.blockgraph import BlockGraph, GraphEdge, GraphNode
from qblocknb.model.chain import display_name
from qblocknb.model.permissions import Conflict
from qblocknb.render import style
from qblocknb.render.graph import svg_id

PERMS = {"consistent-read": "R", "write": "W", "write-unchanged": "U", "resize": "S", "graph-mod": "G"}
LEGEND = "edge: child role, then takes | shares; R consistent-read, W write, U write-unchanged, S resize"
UNKNOWN = "roles guessed from file names, permissions unknown (this QEMU has no x-debug-query-block-graph)"


def abbreviate(perms: tuple[str, ...] | None) -> str:
    """``('write', 'consistent-read')`` -> ``WR`` (in the legend's order); ``-`` for none."""
    if perms is None:
        return "?"
    letters = "".join(letter for name, letter in PERMS.items() if name in perms)
    others = [p for p in perms if p not in PERMS]
    return (letters + "".join(f"+{p}" for p in others)) or "-"


def edge_label(edge: GraphEdge) -> str:
    role = edge.role or "?"
    if edge.perm is None:
        return role
    return f"{role}\n{abbreviate(edge.perm)} | {abbreviate(edge.shared)}"


def node_label(node: GraphNode) -> str:
    if node.kind in ("format", "protocol", "filter"):
        lines = [node.name, node.driver]
        if node.file and node.kind != "filter":
            lines.append(display_name(node.file))
        return "\n".join(line for line in lines if line)
    if node.kind == "job":
        return f"job {node.name}\n{node.driver}"
    if node.kind == "export":
        return f"export {node.name}\n{node.driver}"
    return node.name


def render_block_graph(
    graph: BlockGraph, *, title: str | None = None, conflict: Conflict | None = None
) -> graphviz.Digraph:
    """Draw ``graph``; the caption says which query it came from (and what that leaves unknown)."""
    drawing = graphviz.Digraph(
        "blockgraph",
        graph_attr={**style.GRAPH, "rankdir": "TB"},
        node_attr=dict(style.NODE),
        edge_attr=dict(style.EDGE),
    )
    source = f"from {graph.source}" + ("" if graph.permissions_known else f": {UNKNOWN}")
    caption = "\n".join(line for line in (title, source, LEGEND if graph.permissions_known else "") if line)
    drawing.attr(label=caption, labelloc="b", fontsize="10", fontcolor=style.MUTED)
    for node in graph.nodes:
        attributes = dict(style.GRAPH_NODES[node.kind])
        if node.kind == "job":
            attributes["color"] = style.job_colour(node.driver)
        drawing.node(node.key, node_label(node), id=svg_id(node.kind, node.name), **attributes)
    names = {n.key: n.name for n in graph.nodes}
    for edge in graph.edges:
        pair = (names[edge.parent], names[edge.child])
        attributes = {"id": svg_id("edge", f"{pair[0]}->{pair[1]}"), "label": edge_label(edge)}
        if conflict is not None and pair == (conflict.holder, conflict.node):
            attributes.update(color=style.CONFLICT, fontcolor=style.CONFLICT, penwidth="2.5")
        elif edge.perm is None:
            attributes["style"] = "dashed"
        drawing.edge(edge.parent, edge.child, **attributes)
    return drawing


def graph_text(graph: BlockGraph) -> str:
    """The graph as lines, ``parent -[role takes|shares]-> child``, for where ``dot`` is missing."""
    names = {n.key: n for n in graph.nodes}
    lines = [f"block graph (from {graph.source})"]
    lines += [f"  {n.kind:8} {n.name}  {n.driver}".rstrip() for n in graph.nodes]
    for edge in graph.edges:
        label = edge_label(edge).replace("\n", " ")
        lines.append(f"  {names[edge.parent].name} -[{label}]-> {names[edge.child].name}")
    return "\n".join(lines)
