"""SVG, PNG and files from a diagram, and what Jupyter shows for a chain.

These need graphviz's ``dot`` program; without it they raise a ``ToolError``
that says how to install it, and ``mimebundle`` falls back to text.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import graphviz

from qblocknb.errors import ToolError
from qblocknb.model.blockgraph import BlockGraph
from qblocknb.model.chain import Chain
from qblocknb.render.fullgraph import graph_text, render_block_graph
from qblocknb.render.graph import render
from qblocknb.render.text import text

INSTALL_HINT = "install graphviz with `sudo apt-get install graphviz` (or `conda install graphviz`) to see the diagram"
FORMATS = ("svg", "png", "pdf", "dot")
Drawable = Chain | BlockGraph | graphviz.Digraph


def dot_available() -> bool:
    """True when graphviz's ``dot`` program is on PATH."""
    return shutil.which("dot") is not None


def _graph(chain_or_graph: Drawable, options: dict) -> graphviz.Digraph:
    if isinstance(chain_or_graph, graphviz.Digraph):
        return chain_or_graph
    if isinstance(chain_or_graph, BlockGraph):
        return render_block_graph(chain_or_graph, **options)
    return render(chain_or_graph, **options)


def _pipe(graph: graphviz.Digraph, fmt: str) -> bytes:
    try:
        return graph.pipe(format=fmt, quiet=True)  # dot's warnings (a PNG scaled to fit) are no news to a reader
    except graphviz.ExecutableNotFound:
        raise ToolError(
            "drawing the chain needs graphviz's dot program", "dot is not installed or not on PATH", INSTALL_HINT
        ) from None
    except graphviz.CalledProcessError as error:
        detail = error.stderr.decode(errors="replace").strip() if error.stderr else str(error)
        raise ToolError("graphviz's dot failed to draw the chain", detail, "") from None


def svg(chain_or_graph: Drawable, **options) -> str:
    """The diagram as SVG text, without the XML prologue, ready to embed in HTML."""
    document = _pipe(_graph(chain_or_graph, options), "svg").decode()
    start = document.find("<svg")
    return document[start:] if start >= 0 else document


def png(chain_or_graph: Drawable, dpi: int = 96, **options) -> bytes:
    """The diagram as PNG bytes."""
    graph = _graph(chain_or_graph, options).copy()
    graph.attr(dpi=str(dpi))
    return _pipe(graph, "png")


def save(chain_or_graph: Drawable, path: str | Path, **options) -> Path:
    """Write the diagram to ``path``; the suffix (.svg, .png, .pdf, .dot) picks the format."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise ToolError(f"cannot save a diagram as '{path.name}'", f"the suffix is not one of {', '.join(FORMATS)}", "")
    graph = _graph(chain_or_graph, options)
    if fmt == "dot":
        path.write_text(graph.source)
    elif fmt == "svg":
        path.write_text(svg(graph))
    elif fmt == "png":
        path.write_bytes(png(graph))
    else:
        path.write_bytes(_pipe(graph, fmt))
    return path


def mimebundle(chain: Chain | BlockGraph, include=None, exclude=None, **options) -> dict:
    """Jupyter's view of a chain or a block graph: the SVG diagram, or the text with the install line."""
    wanted = (include is None or "image/svg+xml" in include) and not (exclude and "image/svg+xml" in exclude)
    description = graph_text(chain) if isinstance(chain, BlockGraph) else text(chain, **options)
    if not wanted:
        return {"text/plain": description}
    try:
        return {"image/svg+xml": svg(chain, **options), "text/plain": description}
    except ToolError as error:
        return {"text/plain": f"{description}\n({error})"}
