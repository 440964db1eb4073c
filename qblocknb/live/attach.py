"""Attaching to a QEMU the toolkit did not start: over its QMP socket, or through libvirt.

    vm = qb.connect("/run/my-vm/qmp.sock")        # -qmp unix:PATH,server=on,wait=off
    vm = qb.connect_libvirt("my-domain")          # a VM libvirt manages, through libvirt's own API

Either way the disks are found with ``query-block`` and ``device=`` picks one when there are several.
"""

from __future__ import annotations

import json
import socket
import time
import warnings
from pathlib import Path

from qblocknb.errors import Error, InputError
from qblocknb.live.machine import Machine
from qblocknb.qmp.libvirt import LibvirtSession  # libvirt-python itself is loaded on first use
from qblocknb.qmp.libvirtnative import NativeSession
from qblocknb.qmp.session import Session

GREETING_LIMIT = 64 << 10  # QEMU's greeting is a few hundred bytes
_warned = False  # the passthrough's warning is given once per process


def connect(socket_path: str | Path, device: str | None = None, timeout: float = 15.0) -> Machine:
    """Attach to a QEMU someone else started with ``-qmp unix:PATH,server=on,wait=off``.

    Its disks are found with ``query-block``: with one disk that is the default, with several name one with
    ``device=`` (any of its names: ``virtio-disk0``, ``drive0``, its root node) or set ``vm.device`` later.
    A QEMU that is still starting gets ``timeout`` seconds to create its socket; whatever listens there must
    greet like QEMU's QMP monitor before anything is sent to it (``check_greeting``).
    """
    path = Path(socket_path)
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not path.exists():
        raise InputError(
            f"cannot connect to {path}",
            f"no such socket appeared within {timeout:g} s",
            "start QEMU with -qmp unix:PATH,server=on,wait=off and pass that PATH",
        )
    check_greeting(path, deadline)
    session = Session(path, name=path.stem)
    session.connect(max(deadline - time.monotonic(), 1.0))
    return _attached(session, device)


def check_greeting(path: Path, deadline: float) -> dict:
    """QEMU's QMP greeting from ``path``, read on a connection of its own; InputError when something else answers.

    A QEMU's monitor first says ``{"QMP": {"version": {"qemu": ...}, ...}}``; anything else (another protocol,
    garbage, silence until ``deadline``) is refused before a single command is sent there.
    """
    line = b""
    while True:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as peer:
                peer.settimeout(max(deadline - time.monotonic(), 0.1))
                peer.connect(str(path))
                while b"\n" not in line and len(line) < GREETING_LIMIT:
                    chunk = peer.recv(4096)
                    if not chunk:
                        break
                    line += chunk
            break
        except ConnectionRefusedError:  # the socket file exists before QEMU listens on it
            if time.monotonic() >= deadline:
                raise _not_qemu(path, "nothing accepts connections there") from None
            time.sleep(0.05)
        except TimeoutError:
            silent = f"it said nothing before the timeout ({line[:60]!r})"
            raise _not_qemu(path, f"{silent}; a QEMU monitor that another client holds is silent too") from None
        except OSError as error:
            raise _not_qemu(path, f"it cannot be opened as a unix socket ({error.strerror or error})") from None
    if not line:
        raise _not_qemu(path, "it closed the connection without a word")
    first = line.split(b"\n", 1)[0]
    shown = repr(first[:60].decode(errors="backslashreplace"))
    try:
        greeting = json.loads(first)
    except ValueError:
        greeting = None
    if not isinstance(greeting, dict) or not isinstance(greeting.get("QMP"), dict):
        raise _not_qemu(path, f"it answered {shown}, not QMP's greeting")
    if "qemu" not in (greeting["QMP"].get("version") or {}):
        raise _not_qemu(path, f"its greeting {shown} names no QEMU version")
    return greeting


def _not_qemu(path: Path, why: str) -> InputError:
    todo = "pass the PATH QEMU was started with: -qmp unix:PATH,server=on,wait=off"
    return InputError(f"{path} is not a QEMU QMP socket", why, todo)


def connect_libvirt(
    domain: str, uri: str = "qemu:///system", device: str | None = None, passthrough: bool = False
) -> Machine:
    """Attach to the running libvirt domain ``domain`` at ``uri`` (``qemu+ssh://host/system`` for a remote one).

    The domain is driven through libvirt's own API, as virsh drives it: libvirt records every change of the
    chain (``virsh domblklist`` stays true, a restart boots what the guest last wrote) and the domain is not
    tainted.  Layers are named as virsh names them (``vda[2]``) or by file; ``device`` picks the disk (``vda``).
    ``passthrough=True`` sends raw QMP through libvirt's monitor passthrough instead: every QMP command and
    the full block graph, but the domain is tainted and libvirt's XML goes stale (a restart boots the old disk).
    """
    if passthrough:
        _warn_passthrough(domain)
        return _attached(LibvirtSession(domain, uri), device)
    return _attached(NativeSession(domain, uri), device)


def _warn_passthrough(domain: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"connect_libvirt('{domain}', passthrough=True): libvirt marks the domain as tainted, and any change of "
            "the chain made through the passthrough leaves libvirt's XML stale, so a restart boots the old disk and "
            "loses the guest's later writes; leave out passthrough=True to keep libvirt's record true",
            UserWarning,
            stacklevel=3,
        )


def _attached(session: Session | LibvirtSession, device: str | None) -> Machine:
    """A Machine on an open session, with ``device`` checked against its disks (the session closed if it is wrong)."""
    machine = Machine(session)
    if device is not None:
        try:
            machine.device = device
        except Error:
            session.close()
            raise
    return machine
