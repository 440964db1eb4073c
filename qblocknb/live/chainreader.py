"""The chain as drawn and checked: QEMU's block state, with the jobs running on it and the images they retired.

``ChainReader`` turns ``BlockState``'s two answers into a ``Chain`` for one disk, finds the disk a node
belongs to on a QEMU with several, and adds what the job registry knows: running jobs with their progress
as of now, their targets outside the chain, and the retired images.  Where QEMU has named filters over the
active layer (a pull backup's ``copy-before-write`` and its ``snapshot-access`` view) or targets outside
the chain, the chain also gets those filters and the block exports of what it draws, from QEMU's own
answers, so fleecing that another client set up shows too.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from qblocknb.errors import Error
from qblocknb.live.blockstate import BlockState
from qblocknb.live.jobregistry import JobRegistry
from qblocknb.model.chain import (
    FILTER_DRIVERS,
    PROTOCOL_DRIVERS,
    Chain,
    ExportInfo,
    FilterInfo,
    Image,
    device_id,
    disk_names,
    disks,
    image_from_node,
    pick_disk,
)
from qblocknb.model.nbd import address, nbd_uri
from qblocknb.model.predict import predict


class Checked(NamedTuple):
    """A command's pre-flight: the chain it was checked against, and the chain it will leave."""

    chain: Chain
    after: Chain


class ChainReader:
    """Chains of one QEMU's disks, annotated with its jobs."""

    def __init__(self, state: BlockState, registry: JobRegistry) -> None:
        self.state, self.registry = state, registry

    def chain(self, device: str | None) -> Chain:
        """The chain of ``device`` (any of its names; ``None`` for the only disk)."""
        blocks, nodes = self.state.read()
        return self._annotated(Chain.from_qmp(blocks, nodes, device), blocks, nodes)

    def chain_of(self, name: str | None, device: str | None) -> Chain:
        """The chain that holds ``name``: with several disks and no ``device`` chosen, the disk whose chain has
        it; otherwise the chain of ``device``, where a missing ``name`` is then reported with the valid ones."""
        blocks, nodes = self.state.read()
        if device is None and name and len(disks(blocks)) > 1:
            for entry in disks(blocks):
                chain = Chain.from_qmp(blocks, nodes, device_id(entry))
                if name in disk_names(entry) or chain.find(name) is not None:
                    return self._annotated(chain, blocks, nodes)
        return self._annotated(Chain.from_qmp(blocks, nodes, device), blocks, nodes)

    def check(self, command: str, arguments: dict, device: str | None, running: set[str], cwd: Path | None) -> Checked:
        """Refuse, before sending, what the chain shows cannot work (``predict``); the chain, and the one to expect.

        Right after a snapshot the chain ``BlockState`` expects is used, so the next command costs no query.
        """
        name = arguments.get("device") or arguments.get("node-name") or arguments.get("top-node")
        expected = self.state.expected()
        if expected is not None and (name is None or expected.find(name) is not None or name == expected.device):
            chain = expected
        else:
            chain = self.chain_of(name, device)
        return Checked(chain, predict(chain, command, arguments, running_jobs=running, cwd=cwd).after)

    def _annotated(self, chain: Chain, blocks: list[dict], nodes: list[dict]) -> Chain:
        """The chain with the jobs running on it, their targets, the retired images, and its filters and exports."""
        by_name = {node["node-name"]: node for node in nodes}
        active = self.registry.active()
        if active:  # the drawing shows progress as of now, not as of the sampler's last round
            self.registry.sample_now()
        targets = tuple(
            _target_image(job.target, by_name) for job in active if job.target and chain.find(job.target) is None
        )
        jobs = tuple(job.info() for job in active)
        annotated = chain.with_extras(jobs=jobs, targets=targets, retired=tuple(self.registry.retired))
        return self._with_filters(annotated, blocks, nodes)

    def _with_filters(self, chain: Chain, blocks: list[dict], nodes: list[dict]) -> Chain:
        """The named filters over the active layer and the exports of them and of the targets: asked of QEMU only
        when it has such a filter or the chain a target, so an ordinary chain costs no more queries."""
        named = {node["node-name"]: node for node in nodes}
        if not chain.targets and not any(drv in FLEECING_DRIVERS for drv in (n.get("drv") for n in nodes)):
            return chain
        children = self._children(nodes)
        filters = _filters_over(pick_disk(blocks, chain.device)["inserted"]["node-name"], named, children, chain)
        drawn = {f.node_name for f in filters} | {t.node_name for t in chain.targets if t.node_name}
        if not drawn:
            return chain
        try:
            answer = self.state.session.execute("query-block-exports", record=False)
        except Error:  # QEMU before 5.2 has no block exports to list
            answer = []
        exports = tuple(
            ExportInfo(e["id"], e["node-name"], e.get("type", "nbd"), self._export_uri(e))
            for e in answer
            if e["node-name"] in drawn and not e.get("shutting-down")
        )
        return replace(chain, filters=filters, exports=exports)

    def _children(self, nodes: list[dict]) -> dict[str, dict[str, str]]:
        """Each node's children by role: named by QEMU 10.1+ itself, else from ``x-debug-query-block-graph``."""
        if any("children" in node for node in nodes):
            return {n["node-name"]: {c["child"]: c["node-name"] for c in n.get("children", [])} for n in nodes}
        try:
            graph = self.state.session.execute("x-debug-query-block-graph", record=False)
        except Error:
            return {}
        names = {n["id"]: n["name"] for n in graph["nodes"] if n.get("type") == "block-driver"}
        children: dict[str, dict[str, str]] = {}
        for edge in graph["edges"]:
            if edge["parent"] in names and edge["child"] in names:
                children.setdefault(names[edge["parent"]], {})[edge["name"]] = names[edge["child"]]
        return children

    def _export_uri(self, export: dict) -> str | None:
        """Where a client reads an NBD export: QEMU does not report its server's address, so only when this
        session started the server (``nbd-server-start`` in its history, not stopped since) and added the export."""
        records = list(getattr(getattr(self.state.session, "history", None), "records", ()))
        name = None
        for record in reversed(records):
            if record.outcome != "ok":
                continue
            arguments = record.arguments or {}
            if record.command == "block-export-add" and arguments.get("id") == export["id"] and name is None:
                name = arguments.get("name") or arguments.get("node-name")
            elif record.command == "nbd-server-stop":
                return None
            elif record.command == "nbd-server-start":
                return _server_uri(arguments.get("addr") or {}, name) if name else None
        return None


FLEECING_DRIVERS = {"copy-before-write", "snapshot-access"}


def _filters_over(
    root: str, named: dict[str, dict], children: dict[str, dict[str, str]], chain: Chain
) -> tuple[FilterInfo, ...]:
    """The named filters between the device and the active layer (bottom up), then the named filters that read
    one of them (a ``snapshot-access`` view); QEMU's own ``#block`` filters belong to jobs, drawn as arrows."""
    path: list[FilterInfo] = []
    current, seen = root, set()
    while current in named and named[current].get("drv") in FILTER_DRIVERS and current not in seen:
        seen.add(current)
        below = children.get(current, {}).get("file") or chain.active.node_name
        if not current.startswith("#"):
            target = children.get(current, {}).get("target")
            path.insert(0, FilterInfo(current, named[current]["drv"], below, target))
        current = str(below)
    on_path = {f.node_name for f in path}
    views = [
        FilterInfo(name, node["drv"], children.get(name, {}).get("file"), on_path=False)
        for name, node in named.items()
        if node.get("drv") in FILTER_DRIVERS
        and name not in on_path
        and not name.startswith("#")
        and children.get(name, {}).get("file") in on_path
    ]
    return (*path, *views)


def _server_uri(addr: dict, name: str) -> str | None:
    """``nbd+unix:///NAME?socket=PATH`` or ``nbd://HOST:PORT/NAME`` from ``nbd-server-start``'s address (the
    flat form, or the legacy one with ``data``)."""
    data = addr.get("data", addr)
    if addr.get("type") == "unix" and data.get("path"):
        return f"nbd+unix:///{name}?socket={data['path']}"
    if addr.get("type") == "inet" and data.get("host"):
        return f"nbd://{address(data['host'], data.get('port', 10809))}/{name}"
    return None


def _target_image(target: str, nodes: dict[str, dict]) -> Image:
    """A job target outside the chain, as an Image: its node, the unnamed node QEMU opened for it, or just the name."""
    if target in nodes:
        return image_from_node(nodes[target])
    wanted = nbd_uri(target)
    opened = [n for n in nodes.values() if nbd_uri(n["file"]) == wanted and n.get("drv") not in PROTOCOL_DRIVERS]
    if opened:  # drive-mirror and drive-backup open their target, under an automatic '#block' name unless given one
        image = image_from_node(opened[0])
        return replace(image, node_name=None) if opened[0]["node-name"].startswith("#") else image
    return Image(file=target, format="?", virtual_size=0)
