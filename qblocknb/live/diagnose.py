"""``qb.diagnose(vm)``: read everything the doctor needs from a live QEMU in one pass, and examine it.

Every answer comes from QEMU (or libvirt) as it is now, never from what this connection remembers having
sent, so a VM that another client drove is judged the same way; only the invalid retired images are what
this connection saw leave. A running mirror or active commit is sampled twice, ``sample`` seconds apart, to
see whether it converges::

    import qblocknb as qb
    findings = qb.diagnose(vm)          # or vm.diagnose()
    findings.frame                      # severity, kind, subject, problem, why, todo, fix
    for finding in findings:
        if finding.fix:
            finding.fix.run(vm)         # through vm.execute, with its pre-flight checks
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from qblocknb.errors import Error
from qblocknb.live.plan import Planned, plan
from qblocknb.live.ports import HostPaths, Querier
from qblocknb.live.tools import run
from qblocknb.model.blockgraph import DEBUG_SOURCE, BlockGraph
from qblocknb.model.chain import Chain, Image, RetiredImage, device_id, disks
from qblocknb.model.doctor import DEPTH, Findings, Fix, Header, LibvirtView, Observed, crashes_node_query
from qblocknb.model.domainxml import parse_disks
from qblocknb.model.examine import examine
from qblocknb.model.nbd import is_protocol

if TYPE_CHECKING:
    from qblocknb.live.jobs import Job

SAMPLE = 1.0  # seconds between the two looks at a mirror or active commit
CONVERGING = ("mirror", "commit")


class Diagnosable(Querier, HostPaths, Protocol):
    """What the doctor reads: quiet queries, host files, chains (with this connection's jobs and retired images),
    the session."""

    session: Any

    @property
    def retired(self) -> list[RetiredImage]: ...

    def chain(self, device: str | None = None) -> Chain: ...


class Fixable(Planned, Protocol):
    """What a fix needs: the checked commands, and plans."""

    def execute(self, command: str, arguments: dict | None = None, /) -> Job | Any: ...


def diagnose(vm: Diagnosable, depth: int = DEPTH, sample: float = SAMPLE) -> Findings:
    """Everything wrong with ``vm``'s block layer, worst first; empty for a healthy VM.

    ``depth`` is the longest chain not reported; ``sample`` the seconds between two looks at a running
    mirror or active commit (0 skips the second look).
    """
    return examine(observe(vm, depth, sample))


def observe(vm: Diagnosable, depth: int = DEPTH, sample: float = SAMPLE) -> Observed:
    """One pass of QEMU's (and libvirt's) answers."""
    query, has = vm.query, vm.has_command
    block_jobs = query("query-block-jobs")
    jobs = query("query-jobs") if has("query-jobs") else [{"id": j["device"], **j} for j in block_jobs]
    blocks = query("query-block")
    exports = query("query-block-exports") if has("query-block-exports") else []
    if crashes_node_query(jobs):  # nothing that lists the nodes may be asked: the job findings say why
        nodes, graph, chains = [], None, ()
    else:
        nodes = query("query-named-block-nodes", {"flat": True})
        if has(DEBUG_SOURCE):
            graph = BlockGraph.from_debug_graph(query(DEBUG_SOURCE), nodes, blocks, block_jobs, exports)
        else:
            graph = BlockGraph.from_named_nodes(nodes, blocks, [], exports)
        chains = tuple(vm.chain(device_id(entry)) for entry in disks(blocks))
    later, interval = _second_look(vm, block_jobs, sample)
    return Observed(
        status=query("query-status"),
        blocks=blocks,
        nodes=nodes,
        block_jobs=block_jobs,
        jobs=jobs,
        exports=exports,
        graph=graph,
        chains=chains,
        later_block_jobs=later,
        interval=interval,
        headers=tuple(h for chain in chains for h in _headers(vm, chain)),
        retired_on_disk=tuple(r for r in vm.retired if _local_file(vm, r.file)),
        libvirt=_libvirt(vm),
        depth=depth,
    )


def _second_look(vm: Diagnosable, block_jobs: list[dict], sample: float) -> tuple[list[dict] | None, float]:
    """``query-block-jobs`` again after ``sample`` seconds, when a mirror or commit is running or READY."""
    moving = [j for j in block_jobs if j["type"] in CONVERGING and j.get("status") in ("running", "ready")]
    if not moving or sample <= 0:
        return None, 0.0
    started = time.monotonic()
    time.sleep(sample)
    return vm.query("query-block-jobs"), time.monotonic() - started


def _local_file(vm: HostPaths, name: str) -> Path | None:
    """The image's own file on this host: a plain name, or the file inside a ``json:`` name (QEMU's name for a
    node whose backing is not the one its header names); None for protocols and files not here."""
    if name.startswith("json:"):
        name = _own_file(json.loads(name[5:])) or ""
    if not name or is_protocol(name) or "://" in name:
        return None
    path = vm.host_path(name)
    return path if path.is_file() else None


def _own_file(options: dict) -> str | None:
    """The ``filename`` under a node's ``file`` (and a filter's ``image``), never under its ``backing``."""
    for key in ("file", "image"):
        child = options.get(key)
        if isinstance(child, str):
            return None  # a node name, not a file
        if isinstance(child, dict):
            return child["filename"] if isinstance(child.get("filename"), str) else _own_file(child)
    return None


def _headers(vm: HostPaths, chain: Chain) -> list[Header]:
    """Each layer's header (``qemu-img info -U``, without its backing chain) beside the file QEMU has open below."""
    found = []
    root = chain.active.node_name
    for below, image in itertools.pairwise(chain.images):
        path, under = _local_file(vm, image.file), _local_file(vm, below.file)
        if path is None or under is None:
            continue
        header = _header(vm, image, path, under, root)
        if header is not None:
            found.append(header)
    return found


def _header(vm: HostPaths, image: Image, path: Path, under: Path, root: str | None) -> Header | None:
    try:
        info = json.loads(run("qemu-img", "info", "-U", "--output=json", str(path), what=f"inspecting {path.name}"))
    except Error:
        return None  # an image qemu-img cannot read here: nothing to compare
    backing = info.get("backing-filename")
    if backing is not None and (backing.startswith("json:") or is_protocol(backing)):
        return None
    resolved = (path.parent / backing) if backing else None
    exists = resolved is not None and resolved.exists()
    same = exists and os.path.samefile(resolved, under)  # type: ignore[arg-type]
    return Header(
        image.file,
        image.node_name,
        root,
        backing,
        info.get("backing-filename-format"),
        str(resolved) if resolved else None,
        exists,
        same,
        str(under),
    )


def _libvirt(vm: Diagnosable) -> LibvirtView | None:
    """libvirt's XML, when the session is a libvirt domain's (its ``domain_xml``); else None."""
    read = getattr(vm.session, "domain_xml", None)
    if not callable(read):
        return None
    inactive = read(inactive=True)
    return LibvirtView(
        vm.session.name, tuple(parse_disks(read())), tuple(parse_disks(inactive)) if inactive is not None else None
    )


def run_fix(fix: Fix, vm: Fixable) -> Any:
    """Apply a fix through the Machine's own methods (its pre-flight checks apply): the commands, or the plan."""
    if fix.goal is not None:
        return plan(vm, fix.goal).run(vm)
    return [vm.execute(command, dict(arguments)) for command, arguments in fix.commands]


Fix.run = run_fix  # the model says what fixes a finding; the live layer gives fixes the way to run
