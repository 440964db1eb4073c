"""Attaching to a QEMU the toolkit did not start: over its QMP socket, or through libvirt.

    vm = qb.connect("/run/my-vm/qmp.sock")        # -qmp unix:PATH,server=on,wait=off
    vm = qb.connect_libvirt("my-domain")          # a VM libvirt manages (qemu:///system by default)

Either way the disks are found with ``query-block`` and ``device=`` picks one when there are several.
"""

from __future__ import annotations

import time
from pathlib import Path

from qblocknb.errors import Error, InputError
from qblocknb.live.machine import Machine
from qblocknb.qmp.libvirt import LibvirtSession  # libvirt-python itself is loaded on first use
from qblocknb.qmp.session import Session


def connect(socket_path: str | Path, device: str | None = None, timeout: float = 15.0) -> Machine:
    """Attach to a QEMU someone else started with ``-qmp unix:PATH,server=on,wait=off``.

    Its disks are found with ``query-block``: with one disk that is the default, with several name one with
    ``device=`` (any of its names: ``virtio-disk0``, ``drive0``, its root node) or set ``vm.device`` later.
    A QEMU that is still starting gets ``timeout`` seconds to create its socket.
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
    session = Session(path, name=path.stem)
    session.connect(max(deadline - time.monotonic(), 1.0))
    return _attached(session, device)


def connect_libvirt(domain: str, uri: str = "qemu:///system", device: str | None = None) -> Machine:
    """Attach to the running libvirt domain ``domain`` at ``uri`` (``qemu+ssh://host/system`` for a remote one).

    ``device`` picks the disk (``virtio-disk0``, the ``<alias>`` libvirt gives it); without it the disk is
    found from ``query-block``.  Note that libvirt marks the domain as tainted (``custom-monitor``).
    """
    return _attached(LibvirtSession(domain, uri), device)


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
