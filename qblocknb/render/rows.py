"""Long chains wrap into rows of ``ROW`` images, read like text: left to right, then the next row down.

Jupyter shows a chain's SVG as an image at the width graphviz gives it, so a diagram wider than the cell
gets a scroll bar; shrinking it instead would make its text too small to read.  ``ROW`` images (the seed's
four, with the guest's device) fit a cell of a 1200 px wide window at the diagram's own size, and a longer
chain adds rows rather than width.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import graphviz

ROW = 4


def starts_row(position: int) -> bool:
    """True for the first image of every row but the first: the edge into it must not constrain the layout."""
    return position > 0 and position % ROW == 0


def wrap(graph: graphviz.Digraph, nodes: Sequence[str]) -> None:
    """Place ``nodes[i]`` in column ``i % ROW`` of row ``i // ROW``; nothing to do for a single row.

    Each column is one graphviz rank (left to right), and invisible edges inside it keep the rows in order.
    """
    if len(nodes) <= ROW:
        return
    for column in range(ROW):
        members = nodes[column::ROW]
        with graph.subgraph() as rank:
            rank.attr(rank="same")
            for node in members:
                rank.node(node)
        for upper, lower in pairwise(members):
            graph.edge(upper, lower, style="invis")
