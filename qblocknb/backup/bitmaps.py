"""Dirty bitmaps: which clusters of a node changed since a point in time.

Each helper is one QMP command (``block-dirty-bitmap-add`` and friends) with
its node and bitmap checked first, so a typo reads as a sentence naming the
bitmaps that do exist.  ``frame(vm)`` lists every bitmap; ``backup`` starts a
``blockdev-backup`` that copies only what a bitmap recorded::

    import qblocknb as qb
    qb.bitmaps.add(vm, "node-A", "bitmap0")
    vm.write("virtio0", "1M", "64k", pattern=0x11)
    qb.bitmaps.frame(vm)            # name, node, file, granularity, dirty_bytes, recording, persistent, busy
    job = qb.bitmaps.backup(vm, "node-A", "inc1", bitmap="bitmap0")      # sync=incremental
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from qblocknb.errors import InputError
from qblocknb.model.chain import Bitmap, Chain, Image

if TYPE_CHECKING:
    from qblocknb.live.jobs import Job
    from qblocknb.live.machine import Machine

COLUMNS = ["name", "node", "file", "granularity", "dirty_bytes", "recording", "persistent", "busy"]
BITMAP_MODES = ("on-success", "never", "always")


def _images(chain: Chain) -> list[Image]:
    return [*chain.images, *chain.other_nodes]


def frame(source: Machine | Chain) -> pd.DataFrame:
    """One row per dirty bitmap on the chain's nodes (and on nodes outside it, such as backup targets)."""
    chain = source if isinstance(source, Chain) else source.chain()
    rows = [
        [b.name, image.label, image.name, b.granularity, b.dirty_bytes, b.recording, b.persistent, b.busy]
        for image in _images(chain)
        for b in image.bitmaps
        if b.name  # a mirror's own bitmap has no name
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def find(vm: Machine, node: str, name: str) -> Bitmap:
    """The bitmap ``name`` on ``node``, or an InputError listing what exists."""
    chain = vm.chain()
    image = next((i for i in _images(chain) if node in (i.node_name, i.device)), None)
    if image is None:
        nodes = ", ".join(i.node_name for i in _images(chain) if i.node_name) or "none"
        raise InputError(f"node '{node}' does not exist", f"nodes are {nodes}", "pick one of those")
    for bitmap in image.bitmaps:
        if bitmap.name == name:
            return bitmap
    names = ", ".join(sorted(b.name for b in image.bitmaps if b.name)) or "none"
    raise InputError(
        f"node '{node}' has no bitmap '{name}'",
        f"its bitmaps are {names}",
        "add one with qb.bitmaps.add(vm, node, name)",
    )


def add(
    vm: Machine,
    node: str,
    name: str,
    granularity: int | None = None,
    persistent: bool = False,
    disabled: bool = False,
) -> Bitmap:
    """``block-dirty-bitmap-add``: record changes from now on (``persistent`` survives in the qcow2 file)."""
    extra: dict[str, Any] = {"granularity": granularity} if granularity else {}
    if persistent:
        extra["persistent"] = True
    if disabled:
        extra["disabled"] = True
    vm.execute("block-dirty-bitmap-add", {"node": node, "name": name, **extra})
    return find(vm, node, name)


def remove(vm: Machine, node: str, name: str) -> None:
    """``block-dirty-bitmap-remove`` (a persistent bitmap is also removed from the file)."""
    _command(vm, "block-dirty-bitmap-remove", node, name)


def clear(vm: Machine, node: str, name: str) -> Bitmap:
    """``block-dirty-bitmap-clear``: forget what was recorded; recording goes on."""
    return _command(vm, "block-dirty-bitmap-clear", node, name)


def enable(vm: Machine, node: str, name: str) -> Bitmap:
    return _command(vm, "block-dirty-bitmap-enable", node, name)


def disable(vm: Machine, node: str, name: str) -> Bitmap:
    """``block-dirty-bitmap-disable``: stop recording, keep what was recorded."""
    return _command(vm, "block-dirty-bitmap-disable", node, name)


def merge(vm: Machine, node: str, target: str, sources: list[str]) -> Bitmap:
    """``block-dirty-bitmap-merge``: add what ``sources`` recorded into ``target`` (all on ``node``)."""
    for name in [target, *sources]:
        find(vm, node, name)
    vm.execute("block-dirty-bitmap-merge", {"node": node, "target": target, "bitmaps": list(sources)})
    return find(vm, node, target)


def _command(vm: Machine, command: str, node: str, name: str) -> Bitmap:
    bitmap = find(vm, node, name)
    vm.execute(command, {"node": node, "name": name})
    return bitmap if command.endswith("remove") else find(vm, node, name)


def backup(
    vm: Machine,
    device: str,
    target: str,
    bitmap: str,
    sync: str = "incremental",
    bitmap_mode: str | None = None,
    job_id: str | None = None,
    **extra: Any,
) -> Job:
    """``blockdev-backup`` of what ``bitmap`` recorded into the node ``target``.

    ``sync="incremental"`` clears the bitmap when the job succeeds and keeps it
    when it fails; ``sync="bitmap"`` with ``bitmap_mode`` (``on-success``,
    ``never``, ``always``) chooses, where this QEMU supports it.
    """
    find(vm, device, bitmap)
    if bitmap_mode is not None:
        if not vm.accepts("blockdev-backup", "bitmap-mode"):
            raise InputError(
                "this QEMU's blockdev-backup has no bitmap-mode",
                "its schema does not list it",
                "use sync='incremental', which behaves as bitmap-mode 'on-success'",
            )
        if bitmap_mode not in BITMAP_MODES:
            raise InputError(
                f"bitmap mode '{bitmap_mode}' is not known", f"modes are {', '.join(BITMAP_MODES)}", "pick one of those"
            )
    elif sync == "bitmap":
        raise InputError(
            "sync='bitmap' needs a bitmap_mode",
            "QEMU must know what to do with the bitmap afterwards",
            f"pass bitmap_mode= one of {', '.join(BITMAP_MODES)}",
        )
    arguments = {"device": device, "target": target, "sync": sync, "bitmap": bitmap, **extra}
    if bitmap_mode is not None:
        arguments["bitmap-mode"] = bitmap_mode
    if job_id is not None:
        arguments["job-id"] = job_id
    return vm.execute("blockdev-backup", arguments)
