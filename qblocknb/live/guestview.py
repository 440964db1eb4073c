"""``guest_view(vm)``: what the guest reads on its disk, as runs a test can compare: ``(0, 4 MiB, "0xa1")``.

The disk is read whole through its chain after a flush (``qemu-img convert -U`` to a scratch raw file) and
cut into ``grain``-sized pieces; a piece of one repeated byte is named by that byte, any other by a short
digest, and equal neighbours are merged::

    >>> piece_name(bytes([0xA1]) * 4), piece_name(b"ab")
    ('0xa1', 'sha256:fb8e20fc2e4c')

Two sessions that leave the same bytes give the same runs, and a written pattern reads as itself.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from qblocknb.live.ports import HostPaths
from qblocknb.live.tools import run

if TYPE_CHECKING:
    from qblocknb.model.chain import Chain

GRAIN = 64 << 10
ViewRun = tuple[int, int, str]


class Flushable(HostPaths, Protocol):
    """A QEMU whose active image can be read from this host once it has flushed."""

    def flush(self) -> None: ...

    def chain(self, device: str | None = None) -> Chain: ...


def guest_view(vm: Flushable, grain: int = GRAIN) -> list[ViewRun]:
    """The guest-visible bytes of ``vm.device`` as ``(offset, length, name)`` runs."""
    vm.flush()
    image = vm.host_path(vm.chain().active.file)
    with tempfile.TemporaryDirectory(prefix="qbn-view-") as folder:
        raw = Path(folder) / "view.raw"
        run("qemu-img", "convert", "-U", "-O", "raw", str(image), str(raw), what=f"reading {image.name} whole")
        return runs_of(raw, grain)


def runs_of(path: Path, grain: int = GRAIN) -> list[ViewRun]:
    """The runs of a raw file."""
    runs: list[ViewRun] = []
    offset = 0
    with path.open("rb") as data:
        while piece := data.read(grain):
            name = piece_name(piece)
            if runs and runs[-1][2] == name:
                start, length, _ = runs[-1]
                runs[-1] = (start, length + len(piece), name)
            else:
                runs.append((offset, len(piece), name))
            offset += len(piece)
    return runs


def piece_name(piece: bytes) -> str:
    """``0xa1`` for a piece of one byte repeated, else ``sha256:`` and 12 hex digits."""
    if piece.count(piece[:1]) == len(piece):
        return f"{piece[0]:#04x}"
    return "sha256:" + hashlib.sha256(piece).hexdigest()[:12]
