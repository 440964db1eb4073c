"""``examine(observed)``: every check of the doctor, run over one pass of QEMU's answers.

Each family of checks has its module (jobs and the VM's run state, the block graph and bitmaps, chains and
libvirt); this one only runs them all. It remembers nothing a connection sent, so it judges a VM someone
else drove as well as one of its own::

    >>> seen = Observed(status={"status": "inmigrate", "running": False})
    >>> [(f.severity, f.kind, f.subject) for f in examine(seen)]
    [('warning', 'vm', 'QEMU')]
    >>> examine(Observed(status={"status": "paused", "running": False})).frame.empty
    True
"""

from __future__ import annotations

from qblocknb.model.doctor import Findings, Observed
from qblocknb.model.doctorchain import chain_findings
from qblocknb.model.doctorgraph import graph_findings
from qblocknb.model.doctorjobs import job_findings, vm_findings


def examine(observed: Observed) -> Findings:
    """Every finding in ``observed``, worst first; an empty ``Findings`` for a healthy VM."""
    found = [*job_findings(observed), *vm_findings(observed), *graph_findings(observed), *chain_findings(observed)]
    return Findings(found, observed.chains)
