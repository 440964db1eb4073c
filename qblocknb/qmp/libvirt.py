"""Attach to a VM that libvirt manages, through libvirt's QEMU monitor passthrough.

A domain libvirt started has its QMP monitor held by libvirtd; nobody else may
connect to it.  libvirt-python (``pip install libvirt-python``, built against
``libvirt-dev``) passes single QMP commands through (``qemuMonitorCommand``) and
hands every QMP event to a callback (``qemuMonitorEventRegister``), which is all
a ``Machine`` needs::

    import qblocknb as qb

    vm = qb.connect_libvirt("vm1")                           # qemu:///system, its only disk
    vm = qb.connect_libvirt("vm1", "qemu+ssh://host/system", device="virtio-disk0")
    print(vm.chain())                                        # [base.qcow2] <-- [vm1.qcow2]
    job = vm.block_stream(device=vm.chain().active.node_name, job_id="job0")
    job.wait()

libvirt names things its own way: nodes ``libvirt-N-format`` over
``libvirt-N-storage``, devices ``virtio-disk0`` (the ``<alias>`` in ``virsh
dumpxml``), and the QEMU runs with ``/`` as its working folder, so give QEMU
absolute file names.  ``vm.write``, ``vm.read_matches`` and ``vm.verify`` read
what the guest sees through an NBD export on a unix socket of this host, so they
work on local domains; on a remote URI the socket and the files are on the
remote host, and those calls say so.

**libvirt marks the domain as tainted** on the first passthrough command
(``connect_libvirt`` sends one).  The domain log
``/var/log/libvirt/qemu/NAME.log`` gets ``Domain id=N is tainted:
custom-monitor``, libvirtd's log the same as a warning, and ``virsh dominfo
NAME`` shows ``Messages: tainted: custom monitor control commands issued``
until the domain stops.  libvirt keeps working; the mark says the domain was
changed in ways libvirt cannot vouch for.

**libvirt keeps its own picture of each disk** (``virsh dumpxml``, ``virsh
domblklist``) and of its block jobs (``virsh blockjob``), and does not learn
from the passthrough.  Observed with libvirt 9.0 and QEMU 7.2
(``tests/test_libvirt.py`` checks the snapshot, stream, commit and blockcopy
points; the mirror and ``quit`` were tried by hand):

- ``blockdev-snapshot-sync``, ``block-stream``, ``block-commit`` (active,
  throttled) and ``drive-mirror`` with its pivot all work in QEMU, and their
  events reach the Machine; but ``virsh domblklist`` and ``virsh dumpxml``
  keep showing the file the domain was started with (``<backingStore/>``, no
  new layer), whatever the chain has become.
- While such a job runs, ``virsh blockjob DOMAIN vda --info`` says ``No
  current block job for vda``: libvirt ignores jobs it did not start.
- The other way round works: a job libvirt starts (``virsh blockcopy``,
  ``blockpull``, ``blockcommit``) appears here as a Job of type ``unknown``
  (libvirt names it ``copy-vda-libvirt-1-format``), and ``query-block-jobs``
  agrees with ``virsh blockjob --info --raw`` (``cur``/``end``).  libvirt
  dismisses its own jobs; do not ``complete``/``cancel`` them from here.
- So on a VM you keep, change the chain with virsh and watch it here.  After a
  snapshot, stream, commit or pivot done through the passthrough, libvirt's
  later ``blockcommit``/``blockcopy``/``snapshot-create``, its security
  labels, a migration and a restart all work from the stale XML.  Do not
  ``quit`` through the passthrough either: ``vm.quit()`` ends the domain; to
  detach, ``vm.session.close()``.

HMP ``qemu-io`` writes its verdict on QEMU's stdout, which libvirt sends to the
domain log, not into the HMP reply.  If the same process opens libvirt
connections of its own, call ``start_event_loop()`` before the first one:
libvirt wants its event loop registered before any connection exists.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from qblocknb.errors import CommandError, Error, InputError, QEMUGone, Timeout
from qblocknb.model.listeners import Listeners
from qblocknb.qmp import loop
from qblocknb.qmp.history import History

if TYPE_CHECKING:
    pass

Event = dict
EventCallback = Callable[[Event], None]
DEFAULT_TIMEOUT = 30.0
CONNECT_TIMEOUT = 30.0
WORKERS = 4

_event_lock = threading.Lock()
_event_thread: threading.Thread | None = None


def _libvirt_modules(what: str) -> tuple[Any, Any]:
    """``libvirt`` and ``libvirt_qemu``, or a sentence saying how to install them."""
    try:
        import libvirt
        import libvirt_qemu
    except ImportError as exc:
        raise Error(
            f"{what} needs libvirt-python",
            f"it is not installed ({exc})",
            "install it with `pip install libvirt-python`, which builds against libvirt's C headers: "
            "first `apt-get install libvirt-dev pkg-config gcc` (or your distribution's libvirt-devel)",
        ) from None
    return libvirt, libvirt_qemu


def start_event_loop() -> None:
    """Run libvirt's default event loop in a daemon thread: it delivers QMP events, lifecycle events, keepalives.

    libvirt needs it registered before the process opens its first connection, once per process: call this
    before ``libvirt.open()`` if you open connections of your own next to ``connect_libvirt`` (which calls
    it).  A connection opened earlier is left without keepalives and its calls can stall for tens of seconds.
    """
    libvirt, _ = _libvirt_modules("libvirt's event loop")
    global _event_thread
    with _event_lock:
        if _event_thread is not None:
            return
        libvirt.virEventRegisterDefaultImpl()
        # Every libvirt error reaches the caller as an exception (here: as a sentence); without a handler
        # libvirt-python also prints each one on stderr ("libvirt: QEMU Driver error : ...").
        libvirt.registerErrorHandler(lambda context, error: None, None)

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception:  # one failed iteration must not end event delivery for every session
                    time.sleep(0.1)

        _event_thread = threading.Thread(target=run, name="qblocknb-libvirt-events", daemon=True)
        _event_thread.start()


class LibvirtSession:
    """A libvirt domain's QMP monitor, as a ``Machine`` uses a ``Session``: commands, events, a history."""

    def __init__(self, domain: str, uri: str = "qemu:///system", timeout: float = DEFAULT_TIMEOUT) -> None:
        self.libvirt, self.libvirt_qemu = _libvirt_modules(f"attaching to libvirt domain '{domain}'")
        self.name = domain
        self.uri = uri
        self.where = f"libvirt domain '{domain}' at {uri}"
        self.timeout = timeout
        self.history = History()
        self.listeners = Listeners()
        self.listeners.register(self.history.on_event)  # when jobs became ready or ended: an exported script's waits
        self.conn: Any = None
        self.domain: Any = None
        self._callbacks: list[tuple[str, int]] = []
        self._closed = False
        self._gone_why = ""  # why the domain or the connection went away, as the libvirt callbacks said
        self._executor = concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix=f"qblocknb-libvirt-{domain}")
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<LibvirtSession {self.where}{'' if self.connected else ' (closed)'}>"

    # -- connection -------------------------------------------------------------------------
    def _open(self) -> None:
        libvirt = self.libvirt
        start_event_loop()
        what = f"connecting to {self.where}"
        try:
            self.conn = self._in_worker(lambda: libvirt.open(self.uri), CONNECT_TIMEOUT, what)
        except libvirt.libvirtError as exc:
            raise self.error_for(what, exc) from None
        with contextlib.suppress(libvirt.libvirtError):  # a lost remote connection then shows up, not a hang
            self.conn.setKeepAlive(5, 3)
        self._callbacks.append(("close", 0))
        self.conn.registerCloseCallback(self._on_close, None)
        try:
            self.domain = self.conn.lookupByName(self.name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise self.error_for(what, exc) from None
            running = sorted(d.name() for d in self.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE))
            raise InputError(
                f"there is no libvirt domain '{self.name}' at {self.uri}",
                f"running domains there are {', '.join(running)}" if running else "no domain is running there",
                "pick one of those (virsh -c URI list --all shows them all)",
            ) from None
        if not self.domain.isActive():
            raise InputError(
                f"libvirt domain '{self.name}' at {self.uri} is not running",
                "its QEMU exists only while the domain runs",
                f"start it with `virsh -c {self.uri} start {self.name}` (add --paused to keep the guest stopped)",
            )
        self._callbacks.append(
            (
                "lifecycle",
                self.conn.domainEventRegisterAny(
                    self.domain, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
                ),
            )
        )
        self._attach()

    def _attach(self) -> None:
        """Follow the domain's QMP events through the passthrough; a permission problem shows up now, as a sentence."""
        qmp_events = self.libvirt_qemu.qemuMonitorEventRegister
        self._callbacks.append(("qemu", qmp_events(self.conn, self.domain, None, self._on_qmp_event, None, 0)))
        self.execute("query-status", record=False)

    @property
    def connected(self) -> bool:
        """True while the connection is open and the domain runs (as libvirt's callbacks report; no round trip)."""
        return not self._closed and not self._gone_why

    def close(self) -> None:
        """Deregister the callbacks and close the connection; safe to call twice and on a dead domain."""
        if self._closed:
            return
        self._closed = True
        conn, self.conn = self.conn, None
        if conn is not None:
            for kind, callback_id in self._callbacks:
                with contextlib.suppress(Exception):  # the connection may already be gone
                    if kind == "qemu":
                        self.libvirt_qemu.qemuMonitorEventDeregister(conn, callback_id)
                    elif kind == "lifecycle":
                        conn.domainEventDeregisterAny(callback_id)
                    else:
                        conn.unregisterCloseCallback()
            with contextlib.suppress(Exception):
                conn.close()
        self._callbacks.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def domain_xml(self, inactive: bool = False) -> str | None:
        """The domain's live XML, or with ``inactive`` the definition a restart boots (None: a transient domain)."""
        self._check_open("reading the domain's XML")
        domain, libvirt = self.domain, self.libvirt
        if inactive and not self._in_worker(domain.isPersistent, self.timeout, "asking whether the domain persists"):
            return None
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        return self._in_worker(partial(domain.XMLDesc, flags), self.timeout, "reading the domain's XML")

    # -- libvirt callbacks (on libvirt's event thread) --------------------------------------
    def _on_qmp_event(
        self, conn: Any, dom: Any, event: str, seconds: int, micros: int, details: str | dict | None, opaque: Any
    ) -> None:
        """Shape the event as qemu.qmp does and hand it to the listeners on qblocknb's event loop, in order."""
        message: dict = {"event": event}
        if isinstance(details, str):  # libvirt-python hands over the event's data as JSON text
            try:
                details = json.loads(details)
            except ValueError:
                details = {"text": details}
        if details is not None:
            message["data"] = details
        message["timestamp"] = {"seconds": seconds, "microseconds": micros}
        loop.background_loop().call_soon_threadsafe(self.listeners.notify, message)

    def _on_lifecycle(self, conn: Any, dom: Any, event: int, detail: int, opaque: Any) -> None:
        libvirt = self.libvirt
        if event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
            how = {
                libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "shut down",
                libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "destroyed",
                libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "crashed",
                libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: "migrated away",
                libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED: "saved to a file",
                libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "failed",
            }.get(detail, "stopped")
            self._gone_why = f"libvirt reports that the domain was {how}"

    def _on_close(self, conn: Any, reason: int, opaque: Any) -> None:
        libvirt = self.libvirt
        why = {
            libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "a socket error",
            libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "the other end closed it",
            libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalives went unanswered",
        }.get(reason, "it was closed")
        self._gone_why = self._gone_why or f"the connection to libvirt was lost ({why})"

    # -- commands ---------------------------------------------------------------------------
    def execute(
        self, command: str, arguments: dict | None = None, timeout: float | None = None, record: bool = True
    ) -> object:
        """Send one QMP command through libvirt and return its result; errors become sentences."""
        loop.refuse_in_loop_thread(f"'{command}'")
        arguments = arguments or {}

        return self.history.recorded(command, arguments, lambda: self._answer(command, arguments, timeout), record)

    def _answer(self, command: str, arguments: dict, timeout: float | None) -> object:
        """QEMU's answer to one command, passed through libvirt."""
        return self._result(command, self._send(command, arguments, timeout or self.timeout))

    async def execute_async(self, command: str, arguments: dict | None = None) -> object:
        """For coroutines on qblocknb's loop: an unrecorded command, the blocking libvirt call in a worker thread."""
        self._check_open(command)
        message = _message(command, arguments)
        running = asyncio.get_running_loop()
        try:
            future = running.run_in_executor(self._executor, self._call, message)
            reply = await asyncio.wait_for(future, self.timeout)
        except asyncio.TimeoutError:
            raise self._timeout(command, self.timeout) from None
        except RuntimeError as exc:  # the executor was shut down by close()
            raise self._closed_error(command, str(exc)) from None
        except self.libvirt.libvirtError as exc:
            raise self.error_for(f"'{command}' could not be sent", exc) from None
        return self._result(command, reply)

    def _send(self, command: str, arguments: dict, timeout: float) -> str:
        self._check_open(command)
        try:
            return self._in_worker(partial(self._call, _message(command, arguments)), timeout, f"'{command}'")
        except self.libvirt.libvirtError as exc:
            raise self.error_for(f"'{command}' could not be sent", exc) from None

    def _call(self, message: str) -> str:
        return self.libvirt_qemu.qemuMonitorCommand(self.domain, message, 0)

    def _in_worker(self, call: Callable[[], Any], timeout: float, what: str) -> Any:
        """Run a blocking libvirt call in a worker thread and wait for it at most ``timeout`` seconds."""
        try:
            future = self._executor.submit(call)
        except RuntimeError as exc:  # shut down by close()
            raise self._closed_error(what, str(exc)) from None
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise self._timeout(what, timeout) from None

    def _result(self, command: str, reply: str) -> object:
        """QMP's reply as qemu.qmp gives it: the ``return`` member, or a CommandError keeping class and description."""
        answer = json.loads(reply)
        if "error" in answer:
            error = answer["error"]
            raise CommandError(command, error.get("class", "GenericError"), error.get("desc", ""))
        return answer.get("return")

    # -- errors as sentences ----------------------------------------------------------------
    def _check_open(self, command: str) -> None:
        if self._closed:
            raise self._closed_error(command, "this session was closed")
        if self._gone_why:
            raise QEMUGone(
                f"'{command}' could not be sent to {self.where}",
                self._gone_why,
                "check the domain with `virsh list --all`, then connect_libvirt() again",
            )

    def _closed_error(self, what: str, why: str) -> QEMUGone:
        return QEMUGone(f"'{what}' could not be sent to {self.where}", why, "connect_libvirt() again")

    def closed_error(self, what: str) -> QEMUGone:
        """Why ``what`` failed once this session is closed (as ``Session.closed_error``)."""
        return QEMUGone(
            what,
            f"the connection to {self.where} is closed",
            "check that the domain still runs (virsh list), then qb.connect_libvirt() again",
        )

    def no_answer(self, command: str, timeout: float) -> Timeout:
        """The error for a command the domain's QEMU did not answer in time (as ``Session.no_answer``)."""
        return self._timeout(f"'{command}'", timeout)

    def _timeout(self, what: str, timeout: float) -> Timeout:
        return Timeout(
            f"{what} got no answer from {self.where} within {timeout:.0f} s",
            "libvirt or QEMU is busy or stuck (libvirt runs one monitor command at a time per domain)",
            "look at /var/log/libvirt/qemu/NAME.log and libvirtd's log, or pass a larger timeout",
        )

    def error_for(self, what: str, exc: Exception) -> Error:
        """A libvirtError as a sentence: what was asked, what libvirt said, what to do (for callers of the
        domain's own API too, such as a migration)."""
        connected = None if self.conn is None else _alive(self.conn)
        error = libvirt_error(self.libvirt, what, exc, self.where, self.uri, connected)
        if isinstance(error, QEMUGone):
            self._gone_why = self._gone_why or error.why
        return error


def libvirt_error(libvirt: Any, what: str, exc: Exception, where: str, uri: str, connected: bool | None) -> Error:
    """A libvirtError as a sentence; ``connected`` is whether the connection still works (None: never opened)."""
    code = exc.get_error_code() if isinstance(exc, libvirt.libvirtError) else None
    text = (exc.get_error_message() if isinstance(exc, libvirt.libvirtError) else None) or str(exc)
    if code == libvirt.VIR_ERR_NO_DOMAIN or (code == libvirt.VIR_ERR_OPERATION_INVALID and "not running" in text):
        return QEMUGone(what, f"{where} is not running ({text})", "start it again, then connect_libvirt()")
    if code in (libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_ACCESS_DENIED, libvirt.VIR_ERR_OPERATION_DENIED) or (
        code == libvirt.VIR_ERR_SYSTEM_ERROR and "ermission denied" in text
    ):
        return Error(
            what,
            f"permission denied ({text})",
            "qemu:///system needs root or membership of the 'libvirt' group (a read-only connection "
            "cannot pass monitor commands); your own VMs are at qemu:///session",
        )
    if code == libvirt.VIR_ERR_OPERATION_TIMEOUT:
        return Timeout(what, f"libvirt gave up waiting ({text})", "libvirt is busy with this domain; try again")
    if code == libvirt.VIR_ERR_NO_SUPPORT:
        return Error(what, f"this libvirt driver has no QEMU monitor passthrough ({text})", "use a qemu:// URI")
    lost = code in (libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_INTERNAL_ERROR)
    if lost and not connected:
        return QEMUGone(what, f"the connection to {uri} is lost ({text})", "connect_libvirt() again")
    if connected is None:  # opening the connection failed
        return Error(
            what,
            text,
            "check that libvirtd (or virtqemud) runs there and that the URI is right (virsh -c URI version)",
        )
    return Error(what, f"libvirt said: {text}", "see libvirtd's log for more")


def _alive(conn: Any) -> bool:
    try:
        return bool(conn.isAlive())
    except Exception:
        return False


def _message(command: str, arguments: dict | None) -> str:
    message: dict = {"execute": command}
    if arguments:
        message["arguments"] = arguments
    return json.dumps(message)
