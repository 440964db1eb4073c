"""One observer type for everything that tells others what happened: QMP events, job steps, new chains, Run.

``register`` returns a ``Subscription`` that removes itself (``.remove()``, or at the end of a ``with``
block), in the spirit of qemu.qmp's ``listener()`` context manager and ipywidgets' ``CallbackDispatcher``;
a view keeps its subscriptions and removes them on ``close()``, so a closed view leaves nothing behind.
A callback that raises is logged at debug level on ``qblocknb.model.listeners`` and skipped: a broken view must
not break what it watches::

    >>> seen = []
    >>> events = Listeners()
    >>> broken = events.register(lambda event: 1 / 0)
    >>> with events.register(seen.append):
    ...     events.notify("a")
    >>> events.notify("b")
    >>> seen, len(events)
    (['a'], 1)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
Callback = Callable[..., object]


class Subscription:
    """A registered callback; ``remove()`` (or leaving a ``with`` block) unregisters it, once."""

    def __init__(self, owner: Listeners, callback: Callback) -> None:
        self.owner, self.callback = owner, callback

    def remove(self) -> None:
        self.owner.discard(self.callback)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class Listeners:
    """Callbacks called in the order they registered; safe to change while they are being called."""

    def __init__(self) -> None:
        self._callbacks: list[Callback] = []
        self._lock = threading.Lock()

    def register(self, callback: Callback) -> Subscription:
        with self._lock:
            self._callbacks.append(callback)
        return Subscription(self, callback)

    def discard(self, callback: Callback) -> None:
        """Unregister ``callback`` if it is registered."""
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    def notify(self, *args: Any) -> None:
        """Call each callback with ``args``; one that raises is logged and skipped."""
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(*args)
            except Exception:  # a broken view must not break what it watches
                log.debug("listener %r failed", callback, exc_info=True)

    # list-style names, for code written when these were plain lists
    append = register
    remove = discard

    def __len__(self) -> int:
        return len(self._callbacks)

    def __contains__(self, callback: object) -> bool:
        return callback in self._callbacks
