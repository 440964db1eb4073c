"""What the tutorial notebooks share: show a command as ``qmp-shell -v`` does, and check data out loud.

>>> confirm(True, "b.qcow2 reads as the point in time 'AB'")
verified: b.qcow2 reads as the point in time 'AB'
"""

from __future__ import annotations

import json

from qblocknb.live.lab import Lab
from qblocknb.live.machine import Machine
from qblocknb.model.qmpshell import format_json, format_line
from qblocknb.teaching.seedchain import expected_view


def sent(vm: Machine, command: str | None = None, side: str | None = None) -> None:
    """Print the last command ``vm`` received (or the last ``command``): the qmp-shell line, its virsh line, the
    JSON, the reply."""
    history = vm.history
    if command is not None:
        history = history[history.command == command]
    if history.empty:
        print(f"nothing sent yet{f' as {command}' if command else ''}")
        return
    last = history.iloc[-1]
    prefix = f"[{side}] " if side else ""
    print(f"{prefix}(QEMU)", format_line(last.command, last.arguments))
    if last.virsh:  # the same intent on a libvirt host: a virsh line, or why libvirt cannot
        print(f"{prefix}(virsh)", last.virsh)
    print(format_json(last.command, last.arguments))
    print(json.dumps({"error": last.error} if last.error else {"return": last.result}, indent=4))


def confirm(ok: bool, what: str) -> None:
    """Stop the notebook when a data check fails; say what was checked when it passes."""
    if not ok:
        raise AssertionError(f"check failed: {what}")
    print("verified:", what)


def reads(lab: Lab, image: str, letters: str) -> bool:
    """True when ``image``, read through its own backing chain, shows exactly the seed layers in ``letters``."""
    return lab.runs_match(image, expected_view(letters))
