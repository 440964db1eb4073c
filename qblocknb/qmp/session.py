"""A synchronous QMP session over ``qemu.qmp``, safe to use from a notebook.

Calls block the caller, not the event loop: the QMPClient lives on the shared
background loop (see ``qblocknb.qmp.loop``), events are handed to listeners as they
arrive, and every call has a timeout.  A QEMU that dies turns into
``QEMUGone`` at once instead of a hang.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from qemu.qmp import EventListener, ExecuteError, QMPClient
from qemu.qmp.protocol import Runstate

from qblocknb.errors import CommandError, Error, QEMUGone, Timeout
from qblocknb.model.listeners import Listeners
from qblocknb.qmp import loop
from qblocknb.qmp.history import History

Event = dict
EventCallback = Callable[[Event], None]
DEFAULT_TIMEOUT = 30.0
CONNECT_TIMEOUT = 15.0
EXIT_GRACE_STEPS = 25  # 20 ms each: how long a lost connection waits to see whether QEMU is exiting

# qemu.qmp logs every lost connection as an error with a traceback; we report it as a sentence instead.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


class Session:
    """One QMP connection: commands with timeouts, an event stream, a history."""

    def __init__(
        self,
        socket_path: Path | str,
        name: str = "qemu",
        gone: Callable[[str], Error | None] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.where = str(self.socket_path)
        self.name = name
        self.timeout = timeout
        self.history = History()
        self.listeners = Listeners()  # each event as a dict, on the event thread
        self.listeners.register(self.history.on_event)  # when jobs became ready or ended: an exported script's waits
        self._gone = gone or (lambda what: None)
        self._client = QMPClient(name)
        self._events = EventListener()
        self._client.register_listener(self._events)
        self._pump: concurrent.futures.Future | None = None
        self._held = False  # this session keeps the event loop running
        self._closing = False
        self._ended = threading.Event()  # set once a lost connection has been looked into and cleaned up
        self._lock = threading.Lock()
        self.lost: float | None = None  # when the connection ended without close() (QEMU died or closed it)

    # -- connection -------------------------------------------------------------------------
    def connect(self, timeout: float = CONNECT_TIMEOUT) -> None:
        """Connect, retrying while QEMU creates its socket; fail fast if QEMU exits."""
        deadline = time.monotonic() + timeout
        last = ""
        loop.hold()  # released by close(), or when the connection is lost
        self._held = True
        try:
            while time.monotonic() < deadline:
                error = self._gone(f"connecting to QMP at {self.socket_path}")
                if error is not None:
                    raise error
                if self.socket_path.exists():
                    try:
                        remaining = max(deadline - time.monotonic(), 0.1)
                        loop.run(self._client.connect(str(self.socket_path)), timeout=remaining)
                    except Exception as exc:  # the socket may exist before QEMU listens on it
                        last = str(exc) or type(exc).__name__
                        with contextlib.suppress(Exception):
                            loop.run(self._client.disconnect(), timeout=5)
                    else:
                        self._pump = loop.submit(self._pump_events())
                        return
                time.sleep(0.05)
            raise Timeout(
                f"connecting to QMP at {self.socket_path} did not succeed within {timeout:.0f} s",
                last or "the socket never appeared",
                "check that QEMU was started with -qmp unix:PATH,server=on,wait=off",
            )
        except BaseException:
            self._let_go()
            raise

    @property
    def connected(self) -> bool:
        return self._client.runstate == Runstate.RUNNING

    @property
    def build(self) -> str | None:
        """The QEMU build as its greeting names it (version and package): what its schema depends on."""
        greeting = self._client.greeting
        return None if greeting is None else json.dumps(greeting.QMP.version, sort_keys=True)

    def close(self) -> None:
        """Disconnect; safe to call twice, on a dead QEMU, and from the event thread."""
        self._closing = True
        if self._pump is not None:
            self._pump.cancel()
        if not self._held:  # closed before, or the connection was lost and cleaned up
            return
        if loop.in_loop_thread():  # waiting here would block the loop on itself
            loop.submit(self._disconnect())
            return
        with contextlib.suppress(Exception):  # already gone: nothing left to close
            loop.run(self._client.disconnect(), timeout=5)
        self._let_go()

    async def _disconnect(self) -> None:
        """Close the connection from the loop (a lost one too, so that qemu.qmp's tasks end), then let go."""
        with contextlib.suppress(Exception):
            await self._client.disconnect()
        self._let_go()

    def _let_go(self) -> None:
        """Release this session's hold on the loop, once: with no other session the loop's thread ends."""
        with self._lock:
            held, self._held = self._held, False
        if held:
            loop.release()

    async def _pump_events(self) -> None:
        """Hand each event to the listeners until the connection ends; a lost connection is then cleaned up."""
        while True:
            event = asyncio.ensure_future(self._events.get())
            state = asyncio.ensure_future(self._client.runstate_changed())
            try:
                await asyncio.wait({event, state}, return_when=asyncio.FIRST_COMPLETED)
            finally:  # also when close() cancels the pump: no waiter may outlive it
                state.cancel()
                if not event.done():
                    event.cancel()
            if not event.done() or event.cancelled():
                if self._client.runstate != Runstate.RUNNING:
                    break
                continue
            data = dict(event.result())
            self.listeners.notify(data)
        if not self._closing:
            for _ in range(EXIT_GRACE_STEPS):  # QEMU closes its socket as it exits: let its exit be seen first
                if self._gone("") is not None:
                    break
                await asyncio.sleep(0.02)
            self.lost = time.time()
        await self._disconnect()
        self._ended.set()

    # -- commands ---------------------------------------------------------------------------
    def execute(
        self, command: str, arguments: dict | None = None, timeout: float | None = None, record: bool = True
    ) -> object:
        """Send one command and return its result; errors become sentences."""
        loop.refuse_in_loop_thread(f"'{command}'")
        arguments = arguments or {}
        return self.history.recorded(command, arguments, lambda: self._send(command, arguments, timeout), record)

    def _send(self, command: str, arguments: dict, timeout: float | None) -> object:
        """One command over the loop; every failure raised as a sentence (a dead QEMU as QEMUGone)."""
        if not self._held:  # closed, or lost: the loop may be gone too, so do not touch it
            raise self.closed_error(f"'{command}' could not be sent")
        try:
            return loop.run(self._execute(command, arguments), timeout or self.timeout)
        except ExecuteError as exc:
            raise CommandError(command, exc.error_class, str(exc)) from None
        except (concurrent.futures.TimeoutError, TimeoutError):
            raise self.no_answer(command, timeout or self.timeout) from None
        except Exception as exc:
            raise self.closed_error(f"'{command}' could not be sent", exc) from None

    def no_answer(self, command: str, timeout: float) -> Error:
        """The error for a command QEMU did not answer in time: QEMUGone if it died meanwhile, else Timeout."""
        return self._gone(f"'{command}' got no answer") or Timeout(
            f"'{command}' got no answer within {timeout:g} s",
            "QEMU is alive but did not answer (stopped by SIGSTOP, stuck, or very busy)",
            "look at the QEMU log, send it SIGCONT if it was stopped, or pass a larger timeout",
        )

    def closed_error(self, what: str, cause: BaseException | None = None) -> Error:
        """Why ``what`` failed on a connection that is closed or broken: QEMU's own end if it died, else the socket."""
        if not self._closing and not self.connected:  # lost: the pump is finding out whether QEMU exited
            self._ended.wait(EXIT_GRACE_STEPS * 0.02 + 1.0)
        gone = self._gone(what)
        if gone is not None:
            return gone
        if self.lost:
            how = "was closed by QEMU or the system"
        elif self.connected and cause is not None:  # the connection still stands: say what broke
            how = f"failed ({type(cause).__name__}: {cause})"
        else:
            how = "is closed"
        return QEMUGone(
            what,
            f"the QMP connection to {self.where} {how}",
            f"reconnect with qb.connect({str(self.socket_path)!r}) if QEMU still runs, or launch a new one",
        )

    async def _execute(self, command: str, arguments: dict) -> object:
        return await self._client.execute(command, arguments or None)

    def send_fd(self, fd: int, name: str) -> None:
        """Hand QEMU an open file descriptor as ``name`` (QMP ``getfd`` over SCM_RIGHTS), unrecorded."""
        loop.run(self._send_fd(fd, name), self.timeout)

    async def _send_fd(self, fd: int, name: str) -> None:
        self._client.send_fd_scm(fd)  # on the loop thread, so no other write lands in the middle of the socket
        await self._client.execute("getfd", {"fdname": name})

    async def execute_async(self, command: str, arguments: dict | None = None) -> object:
        """For coroutines already on the loop: an unrecorded command."""
        return await asyncio.wait_for(self._client.execute(command, arguments or None), self.timeout)
