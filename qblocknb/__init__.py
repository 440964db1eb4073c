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
"""

from .chain import Bitmap, Chain, ChainDiff, Image, JobInfo, RetiredImage
from .errors import CommandError, Error, InputError, JobError, QEMUGone, Timeout, ToolError, UnknownCommand
from .jobs import Job
from .lab import Lab, connect
from .machine import Machine

__all__ = [
    "Bitmap",
    "Chain",
    "ChainDiff",
    "CommandError",
    "Error",
    "Image",
    "InputError",
    "Job",
    "JobError",
    "JobInfo",
    "Lab",
    "Machine",
    "QEMUGone",
    "RetiredImage",
    "Timeout",
    "ToolError",
    "UnknownCommand",
    "connect",
]
__version__ = "0.1.0"
