"""ipywidgets for QEMU's live block operations: look, click and understand.

``Dashboard(vm)`` composes the rest: ``ChainView`` (the diagram, redrawn by
itself), a ``JobMonitor`` per running job, one form per seed command and a
qmp-shell ``Console``.  ``PlanView`` picks a goal chain by ticking the
images to keep, and shows and runs ``qb.plan``'s plan for it.  Every widget
changes only traits, so events arriving on the session's thread update them
safely.
"""

from qblocknb.widgets.chainview import ChainView
from qblocknb.widgets.console import Console
from qblocknb.widgets.dashboard import Dashboard
from qblocknb.widgets.fleetview import FleetView
from qblocknb.widgets.form import CommandForm
from qblocknb.widgets.forms import FORMS, BackupForm, CommitForm, MirrorForm, SnapshotForm, StreamForm
from qblocknb.widgets.jobmonitor import JobMonitor
from qblocknb.widgets.planview import PlanView
from qblocknb.widgets.refresher import Refresher

__all__ = [
    "FORMS",
    "BackupForm",
    "ChainView",
    "CommandForm",
    "CommitForm",
    "Console",
    "Dashboard",
    "FleetView",
    "JobMonitor",
    "MirrorForm",
    "PlanView",
    "Refresher",
    "SnapshotForm",
    "StreamForm",
]
