"""Calling listeners (views, callbacks) so that a broken one never stops the event stream, a job or a migration.

A failure is logged at debug level on ``qblocknb.listeners`` instead of reaching the user as a traceback::

    >>> calls = []
    >>> notify([lambda x: 1 / 0, calls.append], "event")
    >>> calls
    ['event']
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)


def notify(listeners: Iterable[Callable[..., object]], *args: object) -> None:
    """Call each listener with ``args``; a listener that raises is logged and skipped."""
    for listener in list(listeners):
        try:
            listener(*args)
        except Exception:  # a broken view must not break what it watches
            log.debug("listener %r failed", listener, exc_info=True)
