"""Chain diagrams: ``render(chain)`` gives a ``graphviz.Digraph``; ``svg``, ``png`` and ``text`` give output.

``render`` builds the graph (no ``dot`` needed); ``svg``/``png``/``save`` run
graphviz's ``dot``; ``text`` needs nothing and is what a notebook shows when
``dot`` is missing, with the line that installs it.
"""

from .graph import render
from .output import INSTALL_HINT, dot_available, mimebundle, png, save, svg
from .text import text

__all__ = ["INSTALL_HINT", "dot_available", "mimebundle", "png", "render", "save", "svg", "text"]
