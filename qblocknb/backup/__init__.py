"""Backups beyond one command: QMP transactions (``actions``), dirty bitmaps (``bitmaps``) and the
incremental backup cycle (``incremental``)."""
