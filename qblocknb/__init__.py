"""qblocknb: QEMU's live block operations, driven from a notebook.

The public names are the ones the tutorials use::

    import qblocknb as qb
    lab = qb.Lab()
    lab.create("a.qcow2", size="64M")
    vm = lab.launch("a.qcow2", node_name="node-A")
    vm.blockdev_snapshot_sync(node_name="node-A", snapshot_file="b.qcow2",
                              snapshot_node_name="node-B", format="qcow2")
    job = vm.block_stream(device="node-B", job_id="job0")
    job.wait()

The widgets, plots and the migration view load ipywidgets and matplotlib, so
they are imported on first use: ``qb.widgets.Dashboard(vm)``, ``qb.plot_timeline(job)``; and
``qb.connect_libvirt(domain)`` loads libvirt-python only when it is called.
"""

import importlib
from typing import Any

from qblocknb import moved
from qblocknb.backup import actions, bitmaps, incremental
from qblocknb.backup.actions import run as transaction
from qblocknb.backup.incremental import Backup, IncrementalBackup
from qblocknb.errors import CommandError, Error, InputError, JobError, QEMUGone, Timeout, ToolError, UnknownCommand
from qblocknb.fleet import Fleet, FleetPlan
from qblocknb.live.attach import connect, connect_libvirt
from qblocknb.live.diagnose import diagnose
from qblocknb.live.jobs import Job
from qblocknb.live.lab import Lab
from qblocknb.live.machine import Machine
from qblocknb.live.plan import StepFailed, plan
from qblocknb.live.recorder import RecordingLab
from qblocknb.live.storagedaemon import StorageDaemon
from qblocknb.migration import tls
from qblocknb.migration.flow import MigrationError, StorageMigration, launch_destination, migrate_storage
from qblocknb.model import goals
from qblocknb.model.chain import Bitmap, Chain, ChainDiff, Image, JobInfo, RetiredImage
from qblocknb.model.planner import Plan
from qblocknb.model.predict import Prediction, predict
from qblocknb.render import render

_LAZY = {
    "widgets": ("qblocknb.widgets", None),
    "plot_timeline": ("qblocknb.widgets.plots", "plot_timeline"),
    "MigrationView": ("qblocknb.widgets.migrationview", "MigrationView"),
}


def _plan_html(the_plan: Plan) -> str:
    """A notebook shows a plan as its steps and the diagram of each chain on the way (the widgets' HTML)."""
    from qblocknb.widgets.planview import plan_html

    return plan_html(the_plan)


Plan._repr_html_ = _plan_html
moved.install()  # code that imports qblocknb.seedchain, qblocknb.machine, ... (the old paths) keeps working


def __getattr__(name: str) -> Any:
    """Load the heavy parts (ipywidgets, matplotlib) only when they are first used."""
    if name not in _LAZY:
        raise AttributeError(f"module 'qblocknb' has no attribute '{name}'")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)


__all__ = [
    "Backup",
    "Bitmap",
    "Chain",
    "ChainDiff",
    "CommandError",
    "Error",
    "Fleet",
    "FleetPlan",
    "Image",
    "IncrementalBackup",
    "InputError",
    "Job",
    "JobError",
    "JobInfo",
    "Lab",
    "Machine",
    "MigrationError",
    "MigrationView",
    "Plan",
    "Prediction",
    "QEMUGone",
    "RecordingLab",
    "RetiredImage",
    "StepFailed",
    "StorageDaemon",
    "StorageMigration",
    "Timeout",
    "ToolError",
    "UnknownCommand",
    "actions",
    "bitmaps",
    "connect",
    "connect_libvirt",
    "diagnose",
    "goals",
    "incremental",
    "launch_destination",
    "migrate_storage",
    "plan",
    "plot_timeline",
    "predict",
    "render",
    "tls",
    "transaction",
    "widgets",
]
__version__ = "0.1.0"
