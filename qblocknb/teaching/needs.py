"""What a notebook section needs that a machine may lack (libvirt, a guest kernel), and skipping it with a sentence.

Binder has neither libvirt nor a kernel its user can read: there a notebook says so in one sentence and the
cells that need it do nothing, instead of failing::

    needs_libvirt(URI)        # without libvirt: prints why, and the cells below do nothing
"""

from __future__ import annotations

import shutil
import subprocess

from qblocknb.errors import Error
from qblocknb.live import guestimage

URI = "qemu:///system"
SETUP = "run `sudo tools/libvirt-setup.sh`, then run the notebook again"


def why_no_libvirt(uri: str = URI, who: str = "This notebook") -> str | None:
    """None when libvirt-python, virsh and a libvirtd at ``uri`` are all here; else a sentence saying what is not.

    The daemon is asked through virsh, so that no connection of this process is opened before libvirt's event
    loop (``qb.connect_libvirt`` starts it).
    """
    try:
        import libvirt  # noqa: F401 (only whether it imports)
    except ImportError:
        return (
            f"{who} needs libvirt-python and a libvirtd, and this machine has no libvirt-python (Binder has "
            f"neither): on your own machine {SETUP}."
        )
    if shutil.which("virsh") is None:
        return f"{who} needs virsh: install libvirt-clients, then run the notebook again."
    try:
        done = subprocess.run(["virsh", "-c", uri, "uri"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return f"{who} needs a libvirtd at {uri}, which did not answer in 30 s: {SETUP}."
    if done.returncode:
        return f"{who} needs a libvirtd at {uri}, which refused ({done.stderr.strip()}): {SETUP}."
    return None


def why_no_guest(who: str = "This section") -> str | None:
    """None when a guest kernel can boot here (``lab.launch(..., guest=True)``); else a sentence saying why not."""
    try:
        guestimage.boot_files()
    except Error as error:
        return f"{who} needs a Linux guest, which cannot boot here: {error}"
    return None


def skip_cells(until: str | None = None) -> None:
    """Make the cells run after this one do nothing, up to the first whose source starts with ``until`` (or all).

    An IPython input transformer drops each cell's lines before it runs, and removes itself at ``until``.
    """
    from IPython import get_ipython

    transformers = get_ipython().input_transformers_cleanup

    def drop(lines: list[str]) -> list[str]:
        if until is not None and lines and lines[0].startswith(until):
            transformers.remove(drop)
            return lines
        return []

    transformers.append(drop)


def needs(problem: str | None, found: str, until: str | None = None) -> None:
    """Print ``problem`` and skip the cells below (up to ``until``) when there is one, else print ``found``."""
    print(problem or found)
    if problem:
        skip_cells(until)


def needs_libvirt(uri: str = URI, who: str = "This notebook", until: str | None = None) -> None:
    """Say whether libvirt answers at ``uri``; when it does not, the cells below (up to ``until``) do nothing."""
    needs(why_no_libvirt(uri, who), f"libvirtd answers at {uri}", until)
