"""Filters over the active layer, and block exports, on the chain diagram: image fleecing as QEMU has it.

While a disk is fleeced with a ``copy-before-write`` filter (``qb.backup.pull``, or any other client), the
guest device reads and writes through the filter: it is drawn between the active layer and the device, in the
full block graph's filter shape, pointing at what it reads as an overlay points at its backing file.  Its
target, the point-in-time scratch image that receives the old data before each guest write, is drawn beside
it; a ``snapshot-access`` view reading the filter, and each export with its URI, further right.  The older
form (``blockdev-backup sync=none``) is a job arrow into a target backed by the chain, which the target's
label calls the point-in-time scratch.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

import graphviz

from qblocknb.model.chain import Chain, ExportInfo, FilterInfo, Image
from qblocknb.model.palette import ORANGE, TEAL
from qblocknb.render import style
from qblocknb.render.labels import SCRATCH, image_label, writers

if TYPE_CHECKING:
    from qblocknb.render.graph import _Layout

FILTER_NODE = style.GRAPH_NODES["filter"]  # as the full block graph draws them
EXPORT_NODE = style.GRAPH_NODES["export"]
FILTER_ROLES = {  # short: a hexagon grows far wider than its longest line
    "copy-before-write": "saves old data first",
    "snapshot-access": "the point-in-time view",
}


def _lines(rows: list[tuple[str, int, str | None, bool]]) -> str:
    """An HTML-like label of (text, point size, colour, bold) lines, the text escaped."""
    cells = ""
    for text, size, colour, bold in rows:
        body = f"<B>{escape(text)}</B>" if bold else escape(text)
        colour_attr = f' COLOR="{colour}"' if colour else ""
        cells += f'<TR><TD><FONT POINT-SIZE="{size}"{colour_attr}>{body}</FONT></TD></TR>'
    return f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">{cells}</TABLE>>'


def filter_label(node: FilterInfo) -> str:
    """``pull0-cbw`` / ``copy-before-write filter`` / what the filter does."""
    rows = [(node.node_name, 12, None, True), (f"{node.driver} filter", 10, None, False)]
    if node.driver in FILTER_ROLES:
        rows.append((FILTER_ROLES[node.driver], 9, style.MUTED, False))
    return _lines(rows)


def export_label(export: ExportInfo) -> str:
    """``export pull0 · nbd``, what it serves, and its URI (the socket on a line of its own)."""
    rows = [(f"export {export.id} · {export.type}", 11, None, True), (f"serves {export.node_name}", 9, None, False)]
    if export.uri:
        uri, _, socket = export.uri.partition("?")
        rows += [(uri, 9, TEAL, False)] + ([(socket, 9, TEAL, False)] if socket else [])
    else:
        rows.append(("address not reported by QEMU", 9, style.MUTED, False))
    return _lines(rows)


def is_scratch(image: Image, chain: Chain) -> bool:
    """A copy-before-write filter's target, or a backup's target backed by the chain (``sync=none`` fleecing)."""
    names = image.names
    if any(node.target in names for node in chain.filters):
        return True
    backed = bool(image.backing_file) and chain.find(image.backing_file or "") is not None
    return backed and any(job.type == "backup" for job in writers(image, chain.jobs))


def draw_filters(graph: graphviz.Digraph, layout: _Layout) -> str | None:
    """The chain's filters, their scratch images and views; returns the filter the device is attached to."""
    attached = None
    for number, node in enumerate(layout.chain.filters):
        node_id = f"f{number}"
        layout.ids.setdefault(node.node_name, node_id)
        graph.node(node_id, filter_label(node), id=f"filter:{node.node_name}", margin="0.02,0.02", **FILTER_NODE)
        child = layout.find(node.child)
        if child:
            graph.edge(child, node_id, id=f"reads:{node.node_name}", dir="back", color=ORANGE)
        if node.on_path:
            attached = node_id
        if node.target:
            _draw_scratch(graph, layout, node, node_id)
    return attached


def _draw_scratch(graph: graphviz.Digraph, layout: _Layout, node: FilterInfo, filter_id: str) -> None:
    """The filter's target beside it, in the same column, with an arrow for the old data it receives."""
    chain = layout.chain
    scratch_id = layout.find(node.target)
    if scratch_id is None:
        known = [i for i in (*chain.other_nodes, *chain.targets) if i.node_name == node.target]
        image = known[0] if known else Image(file=str(node.target), format="?", virtual_size=0)
        scratch_id = layout.learn(image)
        tags = [(SCRATCH, ORANGE), (f"target of {node.node_name}", style.MUTED)]
        graph.node(
            scratch_id,
            image_label(image, tags),
            id=f"scratch:{image.label}",
            fillcolor=style.TARGET_FILL,
            color=ORANGE,
            style="rounded,filled,dashed",
        )
    with graph.subgraph() as column:
        column.attr(rank="same")
        column.node(filter_id)
        column.node(scratch_id)
    graph.edge(
        filter_id,
        scratch_id,
        id=f"copies:{node.node_name}",
        label="old data",
        color=ORANGE,
        fontcolor=ORANGE,
        style="dashed",
        arrowhead="vee",
    )


def draw_exports(graph: graphviz.Digraph, layout: _Layout) -> None:
    """Each export under the node it serves (in its column: no wider a drawing), an arrow the way data leaves."""
    for number, export in enumerate(layout.chain.exports):
        served = layout.find(export.node_name)
        if served is None:
            continue
        node_id = f"x{number}"
        with graph.subgraph() as column:
            column.attr(rank="same")
            column.node(served)
            column.node(node_id, export_label(export), id=f"export:{export.id}", **EXPORT_NODE)
        graph.edge(served, node_id, id=f"exports:{export.id}", color=TEAL, style="dashed", arrowhead="vee")
