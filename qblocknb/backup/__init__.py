"""Backups beyond one command: QMP transactions (``actions``), dirty bitmaps (``bitmaps``), the incremental
backup cycle (``incremental``), and pull-mode backups by image fleecing (``pull``: ``qb.backup.pull(vm, ...)``)."""

from qblocknb.backup.pull import PullBackup, pull

__all__ = ["PullBackup", "pull"]
