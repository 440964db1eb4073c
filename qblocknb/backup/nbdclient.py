"""Reading a pull-mode backup's NBD export with ``qemu-img``: its extents, a whole copy, a copy of some extents.

The extents come from the export's NBD meta contexts: ``base:allocation`` (what holds data) through a plain
``qemu-img map``, or a dirty bitmap's ``qemu:dirty-bitmap:NAME`` through the NBD driver's ``x-dirty-bitmap``
option. That option reads the bitmap's context as if it were ``base:allocation``, so a dirty range comes back
as *no data* and a clean one as data: ``dirty_extents`` turns it the right way round.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from qblocknb.live import images
from qblocknb.live.tools import run

COLUMNS = ["start", "length"]


def _opts(options: dict[str, str | int]) -> str:
    """``key=value,...`` for ``--image-opts``, with commas in values doubled as QEMU's option syntax wants."""
    return ",".join(f"{key}={str(value).replace(',', ',,')}" for key, value in options.items())


def nbd_options(socket: Path, export: str, prefix: str = "") -> dict[str, str | int]:
    """The NBD driver's options for an export on a unix socket (under ``prefix``, such as ``file.``)."""
    return {
        f"{prefix}driver": "nbd",
        f"{prefix}server.type": "unix",
        f"{prefix}server.path": str(socket),
        f"{prefix}export": export,
    }


def _frame(entries: list[dict], dirty: bool) -> pd.DataFrame:
    """The ranges that hold data (``dirty=False``) or that a bitmap read through ``x-dirty-bitmap`` marks."""
    rows = [[e["start"], e["length"]] for e in entries if e["data"] != dirty]
    return pd.DataFrame(rows, columns=COLUMNS)


def data_extents(socket: Path, export: str) -> pd.DataFrame:
    """The export's allocated ranges (``base:allocation``)."""
    out = run("qemu-img", "map", "--output=json", "--image-opts", _opts(nbd_options(socket, export)), what="mapping")
    return _frame(json.loads(out), dirty=False)


def dirty_extents(socket: Path, export: str, bitmap: str) -> pd.DataFrame:
    """The ranges the export's bitmap ``bitmap`` marks dirty (``qemu:dirty-bitmap:NAME``)."""
    options = {**nbd_options(socket, export), "x-dirty-bitmap": f"qemu:dirty-bitmap:{bitmap}"}
    out = run("qemu-img", "map", "--output=json", "--image-opts", _opts(options), what=f"mapping bitmap '{bitmap}'")
    return _frame(json.loads(out), dirty=True)


def copy_all(socket: Path, export: str, path: Path) -> Path:
    """``qemu-img convert`` the whole export into a new qcow2 (holes stay holes)."""
    source = _opts(nbd_options(socket, export))
    run("qemu-img", "convert", "--image-opts", source, "-O", "qcow2", str(path), what=f"saving {path.name}")
    return path


def copy_extents(socket: Path, export: str, extents: pd.DataFrame, path: Path, backing: Path, size: int) -> Path:
    """A new qcow2 overlay of ``backing`` holding only ``extents``, read from the export.

    Each extent is one ``qemu-img convert -n`` between two ``raw`` windows (``offset``/``size``) of the export
    and of the overlay, so nothing else is read or written; a range that reads as zeros becomes zero clusters,
    which hide what the backing has there.
    """
    relative = Path(os.path.relpath(backing.resolve(), path.resolve().parent))
    images.create(path, size, relative, "qcow2", backing_fmt=images.detect_format(backing))
    target = {"driver": "qcow2", "file.driver": "file", "file.filename": str(path.resolve())}
    for start, length in extents[COLUMNS].itertuples(index=False):
        window = {"driver": "raw", "offset": int(start), "size": int(length)}
        source = {**window, **nbd_options(socket, export, "file.")}
        into = {**window, **{f"file.{key}": value for key, value in target.items()}}
        run(
            "qemu-img",
            "convert",
            "-n",
            "--image-opts",
            _opts(source),
            "--target-image-opts",
            _opts(into),
            what=f"copying {length} bytes at {start} into {path.name}",
        )
    return path
