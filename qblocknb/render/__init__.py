"""Chain diagrams: ``render(chain)`` gives a ``graphviz.Digraph``; ``svg``, ``png`` and ``text`` give output.

``render`` builds the graph (no ``dot`` needed); ``svg``/``png``/``save`` run
graphviz's ``dot``; ``text`` needs nothing and is what a notebook shows when
``dot`` is missing, with the line that installs it.
"""

from qblocknb.model.chain import Chain
from qblocknb.render.graph import render
from qblocknb.render.output import INSTALL_HINT, dot_available, mimebundle, png, save, svg
from qblocknb.render.text import text


def _chain_mimebundle(chain: Chain, include=None, exclude=None) -> dict:
    """Jupyter shows a chain as its diagram (as text, with the install line, when graphviz is missing)."""
    return mimebundle(chain, include=include, exclude=exclude)


# The model knows nothing of drawing; loading the renderer teaches chains to show themselves.
Chain._repr_mimebundle_ = _chain_mimebundle

__all__ = ["INSTALL_HINT", "dot_available", "mimebundle", "png", "render", "save", "svg", "text"]
