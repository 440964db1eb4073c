"""``ChainView(vm)``: the chain diagram, redrawn by itself after every command and every job event.

Events only poke the view's ``Refresher``; its worker thread asks QEMU for
the chain and sets the ``HTML`` value.  The last change stays highlighted:
new images in green, re-pointed arrows in orange.  The "full graph" box redraws
with every node QEMU has open instead (``qb.render(vm, full=True)``): filters,
protocol nodes, jobs and exports, with each edge's role and permissions.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from html import escape

import ipywidgets as widgets

from qblocknb.errors import Error
from qblocknb.live.graphreader import read_block_graph
from qblocknb.model.blockgraph import BlockGraph
from qblocknb.model.chain import Chain
from qblocknb.model.listeners import Listeners
from qblocknb.model.palette import OK
from qblocknb.widgets.html import diagram_html, error_html
from qblocknb.widgets.refresher import Refresher


class ChainView(widgets.VBox):
    """The live diagram of one device's chain; ``.chain`` and ``.svg`` hold what it shows.

    A diagram wider than the output shrinks to its width (a long chain already wraps into rows, so it stays
    legible); with ``fit=False`` it keeps its size and scrolls sideways instead.
    ``full=True`` (or ticking "full graph") draws the whole block graph, kept in ``.graph``.
    """

    def __init__(
        self,
        vm,
        device: str | None = None,
        highlight: bool = True,
        interval: float = 0.2,
        fit: bool = True,
        full: bool = False,
    ) -> None:
        self.vm, self.device, self.highlight, self.fit = vm, device, highlight, fit
        self.chain: Chain | None = None
        self.graph: BlockGraph | None = None  # the full graph on show, when the box is ticked
        self.full = widgets.Checkbox(value=full, description="full graph", indent=False)
        self.before: Chain | None = None  # the chain before the last change, for the highlight
        self.listeners = Listeners()  # called with each new chain, on the view's thread
        self.caption = widgets.HTML()
        self.diagram = widgets.HTML()
        self.status = widgets.HTML()
        self._lock = threading.Lock()
        super().__init__([widgets.HBox([self.caption, self.full]), self.diagram, self.status])
        self.add_class("qb-chain-view")
        self.full.observe(lambda _change: self.refresh(), names="value")
        self._subscription = vm.listeners.register(self._on_event)
        self.refresh()
        self._refresher = Refresher(
            self.refresh, signature=self._signature, finished=lambda: not vm.alive(), interval=interval
        )

    @property
    def svg(self) -> str:
        """The SVG on show (empty before the first drawing)."""
        return self.diagram.value

    def refresh(self) -> Chain | None:
        """Ask QEMU for the chain and redraw; errors show under the diagram, which keeps its last picture."""
        with self._lock:
            try:
                chain = self.vm.chain(self.device)
                graph = read_block_graph(self.vm) if self.full.value else None
            except Error as error:
                self.status.value = error_html(error)
                return None
            if self.chain is not None and chain.diff(self.chain):
                self.before = self.chain
            changed = chain.diff(self.before) if self.before is not None else None
            self.caption.value = f"<code>{escape(str(chain))}</code>" + (
                f' <span style="color:{OK}">(last change: {escape(str(changed))})</span>' if changed else ""
            )
            self.graph = graph
            highlight = {"diff_from": self.before if self.highlight else None} if graph is None else {}
            self.diagram.value = diagram_html(graph or chain, fit=self.fit, **highlight)
            self.chain = chain  # last, so that whoever sees the new chain also sees its picture
            self.status.value = ""
        self.listeners.notify(chain)
        return chain

    def poke(self) -> None:
        """Redraw soon, from the view's own thread."""
        self._refresher.poke()

    def close(self) -> None:
        self._subscription.remove()
        self._refresher.close()
        super().close()

    def _on_event(self, _event: dict) -> None:
        self._refresher.poke()  # on the event thread: QMP calls are not allowed here

    def _signature(self) -> Hashable:
        """Changes after any command or event and any job step of 5 %; costs no QMP call."""
        jobs = tuple((job.id, job.status, int(job.progress * 20)) for job in self.vm.job_list)
        return self.vm.state.generation, jobs
