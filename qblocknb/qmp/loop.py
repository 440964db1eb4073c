"""One asyncio loop in a daemon thread, shared by every QMP session, running only while it is needed.

``qemu.qmp`` is asyncio-only and its legacy sync wrapper calls
``run_until_complete``, which fails inside Jupyter's running loop.  Running
our own loop in a thread lets a notebook cell block on ``job.wait()`` while
events keep arriving.

A session ``hold()``s the loop while it is connected and ``release()``s it
when it closes or loses its QEMU; when nobody holds it and nothing submitted
to it is still running, the loop stops and its thread ends, so a closed lab
leaves no thread behind.  The next ``submit`` starts a fresh one.
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
STOP_TIMEOUT = 5.0  # how long a release waits for the loop's thread to end

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_holders = 0  # sessions connected through the loop
_pending = 0  # submitted coroutines not yet finished
_local = threading.local()  # .is_loop is set on the loop's own thread


def background_loop() -> asyncio.AbstractEventLoop:
    """The shared loop, started on first use (and again after it stopped)."""
    with _lock:
        return _started()


def _started() -> asyncio.AbstractEventLoop:
    """The running loop, or a new one; called with ``_lock`` held."""
    global _loop, _thread
    if _loop is None or _loop.is_closed():
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_quiet_lost_connections)
        _thread = threading.Thread(target=_serve, args=(loop,), name="qblocknb-qmp", daemon=True)
        _thread.start()
        _loop = loop
    return _loop


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """The loop's thread: run until stopped, then close the loop so that nothing can be scheduled on it."""
    _local.is_loop = True
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()


def hold() -> None:
    """Keep the loop running (a session connects); pair with ``release()``."""
    global _holders
    with _lock:
        _holders += 1
        _started()


def release() -> None:
    """One holder less; the last one stops the loop (what still runs on it is cancelled) and waits for its thread."""
    global _holders
    with _lock:
        _holders = max(_holders - 1, 0)
        stopping = _detach() if _holders == 0 else None
    if stopping is not None:
        _stop(*stopping)


def _detach() -> tuple[asyncio.AbstractEventLoop, threading.Thread] | None:
    """Take the loop out of use (called with ``_lock`` held): the next ``submit`` starts a new one."""
    global _loop, _thread
    if _loop is None or _thread is None or _loop.is_closed():
        return None
    stopping = (_loop, _thread)
    _loop = _thread = None
    return stopping


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    """Cancel what still runs on ``loop``, stop it, and wait for its thread unless called from that thread."""

    async def wind_down() -> None:
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.get_running_loop().stop()

    with contextlib.suppress(RuntimeError):  # already closed
        asyncio.run_coroutine_threadsafe(wind_down(), loop)
    if threading.current_thread() is not thread:
        thread.join(STOP_TIMEOUT)


def _finished(_future: concurrent.futures.Future) -> None:
    """A submitted coroutine ended: with no holder and nothing else pending, the loop has no more work."""
    global _pending
    with _lock:
        _pending -= 1
        stopping = _detach() if _holders == 0 and _pending == 0 else None
    if stopping is not None:
        _stop(*stopping)


@atexit.register
def _shutdown() -> None:
    """At exit, cancel what still runs on the loop (event pumps, samplers) and stop it quietly."""
    with _lock:
        stopping = _detach()
    if stopping is not None:
        _stop(*stopping)


def _quiet_lost_connections(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """A QEMU that dies leaves qemu.qmp's reader with an EOF nobody awaits; the session reports it instead."""
    if isinstance(context.get("exception"), (EOFError, ConnectionError)):
        return
    loop.default_exception_handler(context)


def in_loop_thread() -> bool:
    """True when called from the loop's own thread, where blocking would deadlock."""
    return getattr(_local, "is_loop", False)


def refuse_in_loop_thread(what: str) -> None:
    """A blocking call made from the loop's own thread would wait for itself forever: say so instead."""
    if in_loop_thread():
        raise Error(
            f"{what} was called from the event thread",
            "it would wait for itself forever",
            "call it from the notebook or a worker thread",
        )


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Schedule a coroutine on the shared loop; the loop runs at least until it has finished."""
    global _pending
    with _lock:
        future = asyncio.run_coroutine_threadsafe(coro, _started())
        _pending += 1
    future.add_done_callback(_finished)
    return future


def run(coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
    """Run a coroutine on the shared loop and wait for its result; on a timeout the coroutine is cancelled."""
    future = submit(coro)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()  # a QMP call given up on must not stay pending on the loop
        raise
