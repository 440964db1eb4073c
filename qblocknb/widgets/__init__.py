"""ipywidgets for QEMU's live block operations: look, click and understand.

``Dashboard(vm)`` composes the rest: ``ChainView`` (the diagram, redrawn by
itself), a ``JobMonitor`` per running job, one form per seed command and a
qmp-shell ``Console``.  Every widget changes only traits, so events arriving
on the session's thread update them safely.
"""

from .chainview import ChainView
from .console import Console
from .dashboard import Dashboard
from .form import CommandForm
from .forms import FORMS, BackupForm, CommitForm, MirrorForm, SnapshotForm, StreamForm
from .jobmonitor import JobMonitor
from .refresher import Refresher

__all__ = [
    "FORMS",
    "BackupForm",
    "ChainView",
    "CommandForm",
    "CommitForm",
    "Console",
    "Dashboard",
    "JobMonitor",
    "MirrorForm",
    "Refresher",
    "SnapshotForm",
    "StreamForm",
]
