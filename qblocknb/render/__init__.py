"""Chain diagrams: ``render(chain)`` gives a ``graphviz.Digraph``; ``svg``, ``png`` and ``text`` give output.

``render`` builds the graph (no ``dot`` needed); ``svg``/``png``/``save`` run
graphviz's ``dot``; ``text`` needs nothing and is what a notebook shows when
``dot`` is missing, with the line that installs it.  ``render(vm, full=True)``
draws every node QEMU has open instead of the chain (``render_block_graph``).
"""

from typing import Any

import graphviz

from qblocknb.errors import InputError
from qblocknb.model.blockgraph import BlockGraph
from qblocknb.model.chain import Chain
from qblocknb.model.doctor import Findings
from qblocknb.render.doctorview import findings_html
from qblocknb.render.fullgraph import graph_text, render_block_graph
from qblocknb.render.graph import render as render_chain
from qblocknb.render.output import INSTALL_HINT, dot_available, mimebundle, png, save, svg
from qblocknb.render.text import text as chain_text


def render(subject: Any, *, full: bool = False, **options: Any) -> graphviz.Digraph:
    """The chain diagram of a Chain; with ``full=True`` (or given a BlockGraph) the whole block graph.

    ``full=True`` takes a BlockGraph, or anything with a ``block_graph()`` method (a Machine), which is asked.
    """
    if isinstance(subject, BlockGraph):
        return render_block_graph(subject, **options)
    if not full:
        return render_chain(subject, **options)
    reader = getattr(subject, "block_graph", None)
    if not callable(reader):
        raise InputError(
            f"render(..., full=True) cannot draw a {type(subject).__name__}",
            "the full graph is read from a running QEMU, and a chain does not keep one",
            "pass the Machine itself, qb.render(vm, full=True), or a graph from read_block_graph(vm)",
        )
    return render_block_graph(reader(), **options)


def text(subject: Chain | BlockGraph, **options: Any) -> str:
    """The diagram as text: the chain's, or the block graph's edges."""
    return graph_text(subject) if isinstance(subject, BlockGraph) else chain_text(subject, **options)


def _mimebundle(subject: Chain | BlockGraph, include=None, exclude=None) -> dict:
    """Jupyter shows a chain or a block graph as its diagram (as text, with the install line, without dot)."""
    return mimebundle(subject, include=include, exclude=exclude)


# The model knows nothing of drawing; loading the renderer teaches chains and graphs to show themselves.
Chain._repr_mimebundle_ = _mimebundle
BlockGraph._repr_mimebundle_ = _mimebundle
Findings._repr_html_ = findings_html  # qb.diagnose(vm): each finding beside its chain, the subject highlighted

__all__ = [
    "INSTALL_HINT",
    "dot_available",
    "graph_text",
    "mimebundle",
    "png",
    "render",
    "render_block_graph",
    "save",
    "svg",
    "text",
]
