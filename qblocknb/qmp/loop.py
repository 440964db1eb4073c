"""One asyncio loop in a daemon thread, shared by every QMP session.

``qemu.qmp`` is asyncio-only and its legacy sync wrapper calls
``run_until_complete``, which fails inside Jupyter's running loop.  Running
our own loop in a thread lets a notebook cell block on ``job.wait()`` while
events keep arriving.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from qblocknb.errors import Error

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def background_loop() -> asyncio.AbstractEventLoop:
    """The shared loop, started on first use."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            loop.set_exception_handler(_quiet_lost_connections)
            thread = threading.Thread(target=loop.run_forever, name="qblocknb-qmp", daemon=True)
            thread.start()
            _loop = loop
        return _loop


def _shutdown() -> None:
    """At exit, cancel what still runs on the loop (event pumps, samplers) and stop it quietly."""
    loop = _loop
    if loop is None or not loop.is_running():
        return

    async def cancel_others() -> None:
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(cancel_others(), loop).result(2)
    loop.call_soon_threadsafe(loop.stop)


atexit.register(_shutdown)


def _quiet_lost_connections(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """A QEMU that dies leaves qemu.qmp's reader with an EOF nobody awaits; the session reports it instead."""
    if isinstance(context.get("exception"), (EOFError, ConnectionError)):
        return
    loop.default_exception_handler(context)


def in_loop_thread() -> bool:
    """True when called from the loop's own thread, where blocking would deadlock."""
    try:
        return asyncio.get_running_loop() is _loop
    except RuntimeError:
        return False


def refuse_in_loop_thread(what: str) -> None:
    """A blocking call made from the loop's own thread would wait for itself forever: say so instead."""
    if in_loop_thread():
        raise Error(
            f"{what} was called from the event thread",
            "it would wait for itself forever",
            "call it from the notebook or a worker thread",
        )


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Schedule a coroutine on the shared loop."""
    return asyncio.run_coroutine_threadsafe(coro, background_loop())


def run(coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
    """Run a coroutine on the shared loop and wait for its result; on a timeout the coroutine is cancelled."""
    future = submit(coro)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()  # a QMP call given up on must not stay pending on the loop
        raise
