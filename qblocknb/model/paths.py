"""Where a file name lies: the one rule for names relative to QEMU's working folder or a lab's.

>>> from pathlib import Path
>>> resolve("b.qcow2", Path("/lab")), resolve("/data/b.qcow2", Path("/lab"))
(PosixPath('/lab/b.qcow2'), PosixPath('/data/b.qcow2'))
"""

from __future__ import annotations

from pathlib import Path


def resolve(name: str | Path, folder: Path | None) -> Path:
    """Absolute names as they are, others inside ``folder`` (QEMU's or a lab's); no folder, no change."""
    path = Path(name)
    return path if path.is_absolute() or folder is None else folder / path
