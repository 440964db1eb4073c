"""A worker thread that redraws a view when something changed, off the event thread.

QMP events arrive on the session's thread, where a QMP call would wait for
itself; so views only ``poke()`` a ``Refresher`` there.  Its thread also
watches a cheap ``signature()`` (say, the length of the command history), so
commands typed in the notebook redraw the view too.  Bursts of pokes
collapse into one run, and runs are at least ``gap`` seconds apart::

    >>> import threading
    >>> done = threading.Event()
    >>> refresher = Refresher(done.set, interval=0.01)
    >>> refresher.poke()
    >>> done.wait(5)
    True
    >>> refresher.close()
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable


class Refresher:
    """Runs ``action`` on its own daemon thread after ``poke()`` or when ``signature()`` changes.

    Once ``finished()`` is true the action runs one last time and the thread ends.
    """

    def __init__(
        self,
        action: Callable[[], None],
        signature: Callable[[], Hashable] | None = None,
        finished: Callable[[], bool] | None = None,
        interval: float = 0.2,
        gap: float = 0.1,
        settle: float = 0.03,
        name: str = "qblocknb-view",
    ) -> None:
        self.action = action
        self.signature = signature or (lambda: None)
        self.finished = finished or (lambda: False)
        self.interval, self.gap, self.settle = interval, gap, settle
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last = self._safe(self.signature)  # here, not on the thread: a change right after counts too
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Ask for a run soon; safe from any thread, including the event thread."""
        self._wake.set()

    def close(self) -> None:
        """Stop the thread after its current run."""
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
        last = self._last
        while not self._stop.is_set():
            woken = self._wake.wait(self.interval)
            if self._stop.is_set():
                return
            finished = self._safe(self.finished)
            if not woken and not finished and self._safe(self.signature) == last:
                continue
            if self._stop.wait(self.settle):  # let a burst of events land before drawing
                return
            self._wake.clear()
            last = self._safe(self.signature)
            with contextlib.suppress(Exception):  # the action shows its own errors; the thread must live on
                self.action()
            if finished or self._stop.wait(self.gap):
                return

    @staticmethod
    def _safe(probe: Callable[[], Hashable]) -> Hashable:
        try:
            return probe()
        except Exception:  # a probe of a dead QEMU counts as "no change"
            return None
