"""The chain as drawn and checked: QEMU's block state, with the jobs running on it and the images they retired.

``ChainReader`` turns ``BlockState``'s two answers into a ``Chain`` for one disk, finds the disk a node
belongs to on a QEMU with several, and adds what the job registry knows: running jobs with their progress
as of now, their targets outside the chain, and the retired images.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from qblocknb.live.blockstate import BlockState
from qblocknb.live.jobregistry import JobRegistry
from qblocknb.model.chain import PROTOCOL_DRIVERS, Chain, Image, device_id, disk_names, disks, image_from_node
from qblocknb.model.nbd import nbd_uri
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
        return self._annotated(Chain.from_qmp(blocks, nodes, device), nodes)

    def chain_of(self, name: str | None, device: str | None) -> Chain:
        """The chain that holds ``name``: with several disks and no ``device`` chosen, the disk whose chain has
        it; otherwise the chain of ``device``, where a missing ``name`` is then reported with the valid ones."""
        blocks, nodes = self.state.read()
        if device is None and name and len(disks(blocks)) > 1:
            for entry in disks(blocks):
                chain = Chain.from_qmp(blocks, nodes, device_id(entry))
                if name in disk_names(entry) or chain.find(name) is not None:
                    return self._annotated(chain, nodes)
        return self._annotated(Chain.from_qmp(blocks, nodes, device), nodes)

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

    def _annotated(self, chain: Chain, nodes: list[dict]) -> Chain:
        """The chain with the jobs running on it, their targets, and the retired images."""
        by_name = {node["node-name"]: node for node in nodes}
        active = self.registry.active()
        if active:  # the drawing shows progress as of now, not as of the sampler's last round
            self.registry.sample_now()
        targets = tuple(
            _target_image(job.target, by_name) for job in active if job.target and chain.find(job.target) is None
        )
        jobs = tuple(job.info() for job in active)
        return chain.with_extras(jobs=jobs, targets=targets, retired=tuple(self.registry.retired))


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
