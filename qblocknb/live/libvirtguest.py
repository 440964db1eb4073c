"""A libvirt domain for tests and tutorials, optionally booting the tiny test guest, and its ``Guest``.

``domain_xml`` describes a persistent domain on one qcow2 image: ``vda``, no network, QEMU as root with no
relabelling (a lab folder is 0700 and owned by its user), and with ``guest=`` the kernel and initramfs of
``qblocknb.live.guestimage`` with its two serial ports on unix sockets, as ``lab.launch(..., guest=True)``
has them.  libvirt's virtlogd keeps the console in a log file from the first byte, so a guest that reached
its shell before anyone connected is still seen booted::

    >>> paths = guest_paths(Path("/run/lab"), "vm1")
    >>> paths.console.name, paths.progress.name, paths.console_log.name
    ('vm1.console.sock', 'vm1.progress.sock', 'vm1.console.log')
    >>> print(serial_xml(paths).splitlines()[1])
    <serial type='unix'><source mode='bind' path="/run/lab/vm1.progress.sock"/><target port='1'/></serial>

Once the domain runs, ``attach_guest(paths, gone)`` connects to both ports and waits for the shell, giving
the same ``Guest`` a Lab's machine has (``shell``, ``start_writer``, ``stop_writer``, ``point_in_time``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from qblocknb.errors import InputError, QEMUGone
from qblocknb.live.guest import BOOT_TIMEOUT, Gone, Guest, guest_accel, qemu_args
from qblocknb.live.guestimage import BootFiles
from qblocknb.live.process import kvm_usable

MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes
GUEST_MEMORY_MIB = 256  # as a Lab's guest; the kernel and its initramfs live in RAM


@dataclass(frozen=True)
class GuestPaths:
    """The guest's serial sockets (console ttyS0, writer progress ttyS1) and the console's log."""

    console: Path
    progress: Path
    console_log: Path


def guest_paths(sockets_dir: Path, name: str) -> GuestPaths:
    """Where a domain called ``name`` puts its guest's sockets and console log; AF_UNIX paths must be short."""
    paths = GuestPaths(
        sockets_dir / f"{name}.console.sock", sockets_dir / f"{name}.progress.sock", sockets_dir / f"{name}.console.log"
    )
    longest = max(len(str(paths.console)), len(str(paths.progress)))
    if longest > MAX_SOCKET_PATH:
        raise InputError(
            f"the guest's serial sockets in {sockets_dir} would be {longest} characters long",
            f"a unix socket path holds at most {MAX_SOCKET_PATH}",
            "pass a shorter sockets_dir, e.g. one made by tempfile.mkdtemp()",
        )
    return paths


def domain_virt_type(guest: bool = False) -> str:
    """libvirt's ``kvm`` or ``qemu`` (TCG), chosen as a Lab chooses its accelerator (``$QBLOCKNB_ACCEL`` first).

    QEMU runs as root under the static label, so whether /dev/kvm opens here is what counts; a guest kernel
    gets TCG where /dev/kvm is PVM (see ``guest_accel``).
    """
    accel = guest_accel(None) if guest else os.environ.get("QBLOCKNB_ACCEL") or None
    if accel is None:
        accel = "kvm" if kvm_usable() else "tcg"
    return "kvm" if accel == "kvm" else "qemu"


def domain_xml(
    name: str,
    image: Path,
    *,
    guest: BootFiles | None = None,
    sockets_dir: Path | None = None,
    virt_type: str | None = None,
    memory_mib: int = GUEST_MEMORY_MIB,
) -> str:
    """A persistent domain's XML: ``image`` (qcow2) as ``vda``; with ``guest``, the test guest boots from it.

    A guest needs ``sockets_dir`` for its serial sockets and console log (see ``guest_paths``).
    """
    if guest is not None and sockets_dir is None:
        raise InputError(
            f"domain {name} boots the test guest but has nowhere for its serial ports",
            "guest= needs sockets_dir=",
            "pass sockets_dir=, a short folder QEMU may create sockets in",
        )
    boot, serials = "", ""
    if guest is not None and sockets_dir is not None:
        paths = guest_paths(sockets_dir, name)
        boot = _boot_xml(guest, paths)
        serials = serial_xml(paths)
    virt_type = virt_type or domain_virt_type(guest is not None)
    return f"""<domain type={quoteattr(virt_type)}>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>{boot}
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file={quoteattr(str(image.absolute()))}/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <controller type='usb' model='none'/>
    {serials}
    <memballoon model='none'/>
  </devices>
</domain>
"""


def _boot_xml(boot: BootFiles, paths: GuestPaths) -> str:
    """Kernel, initramfs and command line exactly as ``qemu_args`` gives them to a Lab's guest."""
    args = qemu_args(boot, paths.console, paths.progress, paths.console_log)
    cmdline = args[args.index("-append") + 1]
    return f"""
    <kernel>{escape(str(boot.kernel))}</kernel>
    <initrd>{escape(str(boot.initrd))}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>"""


def serial_xml(paths: GuestPaths) -> str:
    """ttyS0 (the shell, logged by virtlogd) and ttyS1 (the writer's progress), QEMU listening on each."""
    log = f"<log file={quoteattr(str(paths.console_log))} append='off'/>"
    return "\n".join(
        f"<serial type='unix'><source mode='bind' path={quoteattr(str(path))}/>{extra}<target port='{port}'/></serial>"
        for port, (path, extra) in enumerate(((paths.console, log), (paths.progress, "")))
    )


def domain_gone(name: str, running: Callable[[], bool]) -> Gone:
    """A ``gone`` callable for ``Guest``: an error once ``running()`` says the domain stopped."""

    def gone(what: str) -> QEMUGone | None:
        if running():
            return None
        return QEMUGone(what, f"libvirt domain '{name}' is not running", f"start it again: virsh start {name}")

    return gone


def attach_guest(paths: GuestPaths, gone: Gone, started: float | None = None, timeout: float = BOOT_TIMEOUT) -> Guest:
    """The running domain's guest, once its shell answers; ``started`` is ``time.monotonic()`` at its start.

    Attach again after every start of the domain: its QEMU makes new sockets and a new console log.
    """
    started = time.monotonic() if started is None else started
    guest = Guest(gone, paths.console, paths.progress, paths.console_log, started)
    guest.boot(timeout)
    return guest
