"""One asyncio loop in a daemon thread, shared by every QMP session.

``qemu.qmp`` is asyncio-only and its legacy sync wrapper calls
``run_until_complete``, which fails inside Jupyter's running loop.  Running
our own loop in a thread lets a notebook cell block on ``job.wait()`` while
events keep arriving.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def background_loop() -> asyncio.AbstractEventLoop:
    """The shared loop, started on first use."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="qblocknb-qmp", daemon=True)
            thread.start()
            _loop = loop
        return _loop


def in_loop_thread() -> bool:
    """True when called from the loop's own thread, where blocking would deadlock."""
    try:
        return asyncio.get_running_loop() is _loop
    except RuntimeError:
        return False


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Schedule a coroutine on the shared loop."""
    return asyncio.run_coroutine_threadsafe(coro, background_loop())


def run(coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
    """Run a coroutine on the shared loop and wait for its result."""
    return submit(coro).result(timeout)
