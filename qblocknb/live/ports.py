"""The narrow faces of a live QEMU that the parts of a Machine read through, so that none of them needs the Machine.

A ``Machine`` has them all, over any backend; a test can stand in for one with a few methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class Querier(Protocol):
    """Quiet questions to QEMU (not in ``vm.history``), and whether it knows a command before asking."""

    def query(self, command: str, arguments: dict | None = None) -> Any: ...

    def has_command(self, name: str) -> bool: ...


class HostPaths(Protocol):
    """Where a file named as QEMU knows it lies on this host (QEMU's working folder may differ from ours)."""

    def host_path(self, file: str | Path) -> Path: ...
