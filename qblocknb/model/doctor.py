"""The block layer's doctor, as plain data: what it reads, what it finds, and what fixes it.

``Observed`` holds one pass of QEMU's (and libvirt's) answers; ``qblocknb.model.examine`` turns it into
``Findings``, each a ``Finding`` with its severity, subject, the problem, why it matters, what to do and,
where there is one, a ``Fix``::

    >>> finding = Finding("warning", "job", "job0", "job0 is READY", "it waits", "complete it",
    ...                   Fix("complete", (("block-job-complete", {"device": "job0"}),)))
    >>> str(finding.fix)
    'block-job-complete device=job0'
    >>> Findings([finding]).frame[["severity", "kind", "subject"]].values.tolist()
    [['warning', 'job', 'job0']]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd

from qblocknb.model.blockgraph import BlockGraph
from qblocknb.model.chain import Chain, RetiredImage
from qblocknb.model.domainxml import Disk
from qblocknb.model.qmpshell import format_line

SEVERITIES = ("error", "warning", "info")
KINDS = ("job", "node", "bitmap", "image", "disk", "vm")  # image: a file on disk; disk: a guest disk
COLUMNS = ["severity", "kind", "subject", "problem", "why", "todo", "fix"]
DEPTH = 8  # images in a chain before reads through it slow down and a flatten is worth its copy


@dataclass(frozen=True)
class Fix:
    """What clears a finding: QMP commands sent through the Machine's checked methods, or a plan to a goal.

    ``fix.run(vm)`` (given by ``qblocknb.live.diagnose``) sends them; ``str(fix)`` shows them as typed.
    """

    summary: str
    commands: tuple[tuple[str, dict], ...] = ()
    goal: str | None = None  # a chain in the seed's notation, reached with qb.plan(vm, goal).run(vm)

    def __str__(self) -> str:
        if self.goal is not None:
            return f'qb.plan(vm, "{self.goal}").run(vm)'
        return "; ".join(format_line(command, arguments) for command, arguments in self.commands)


@dataclass(frozen=True)
class Finding:
    """One thing wrong: how bad, what it is about, what is wrong, why it matters, what to do, and its fix."""

    severity: str  # one of SEVERITIES
    kind: str  # one of KINDS
    subject: str  # the job id, node name, bitmap, image file, disk or "QEMU"
    problem: str
    why: str
    todo: str
    fix: Fix | None = None
    where: str | None = None  # the node, job or device to highlight in the chain diagram

    def __str__(self) -> str:
        text = f"{self.severity.upper():8} {self.kind} {self.subject}: {self.problem}; {self.why}; {self.todo}."
        return text + (f"\n         fix: {self.fix}" if self.fix else "")


@dataclass(frozen=True)
class Header:
    """What an image's header names as its backing file, checked against the file QEMU has open below it."""

    file: str  # the image, as QEMU names it
    node: str | None  # its node name, and the root node of its chain (change-backing-file names both)
    root: str | None
    backing: str | None  # the backing name as written in the header
    backing_format: str | None
    resolves_to: str | None  # the header's name resolved from the image's own folder
    exists: bool  # that resolved file exists
    same_as_open: bool  # and it is the file QEMU has open as the backing
    open_backing: str | None  # the file QEMU has open as the backing


@dataclass(frozen=True)
class LibvirtView:
    """libvirt's picture of the domain: its live XML's disks, and the definition a restart boots (if persistent)."""

    domain: str
    live: tuple[Disk, ...]
    inactive: tuple[Disk, ...] | None = None  # None for a transient domain (a restart cannot happen)


@dataclass(frozen=True)
class Observed:
    """QEMU's (and libvirt's) answers, taken in one pass; the empty defaults stand for "nothing there"."""

    status: dict = field(default_factory=dict)  # query-status
    blocks: list[dict] = field(default_factory=list)  # query-block
    nodes: list[dict] = field(default_factory=list)  # query-named-block-nodes, flat
    block_jobs: list[dict] = field(default_factory=list)  # query-block-jobs
    jobs: list[dict] = field(default_factory=list)  # query-jobs
    exports: list[dict] = field(default_factory=list)  # query-block-exports
    graph: BlockGraph | None = None  # every node with its parents (x-debug-query-block-graph)
    chains: tuple[Chain, ...] = ()  # one per disk
    later_block_jobs: list[dict] | None = None  # query-block-jobs again, ``interval`` seconds later
    interval: float = 0.0
    headers: tuple[Header, ...] = ()
    retired_on_disk: tuple[RetiredImage, ...] = ()  # images this connection saw leave, whose files remain
    libvirt: LibvirtView | None = None
    depth: int = DEPTH


class Findings:
    """What ``diagnose`` found, worst first: iterate the ``Finding`` objects, or read ``frame``."""

    def __init__(self, items: list[Finding], chains: tuple[Chain, ...] = ()) -> None:
        self.items = tuple(sorted(items, key=lambda f: SEVERITIES.index(f.severity)))
        self.chains = chains

    def __iter__(self) -> Iterator[Finding]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> Finding:
        return self.items[position]

    def __repr__(self) -> str:
        return f"<Findings: {self.summary}>"

    def __str__(self) -> str:
        return "\n".join([self.summary, *(str(finding) for finding in self.items)])

    @property
    def summary(self) -> str:
        if not self.items:
            return "nothing wrong found"
        counts = [f"{sum(f.severity == s for f in self.items)} {s}" for s in SEVERITIES]
        return ", ".join(count for count in counts if not count.startswith("0 "))

    @property
    def errors(self) -> list[Finding]:
        return [finding for finding in self.items if finding.severity == "error"]

    @property
    def frame(self) -> pd.DataFrame:
        """One row per finding: severity, kind, subject, problem, why, todo, fix (as typed, or empty)."""
        rows = [
            [f.severity, f.kind, f.subject, f.problem, f.why, f.todo, str(f.fix) if f.fix else ""] for f in self.items
        ]
        return pd.DataFrame(rows, columns=COLUMNS)

    def about(self, kind: str, subject: str) -> list[Finding]:
        """The findings on one subject (``findings.about("job", "job0")``)."""
        return [f for f in self.items if f.kind == kind and f.subject == subject]


def crashes_node_query(jobs: list[dict]) -> bool:
    """True while a finished stream waits for job-dismiss: then QEMU 7.2 dies of ``query-named-block-nodes``
    (measured: signal 11), so the doctor reads no node list, and says to dismiss the job first."""
    return any(job.get("type") == "stream" and job.get("status") == "concluded" for job in jobs)
