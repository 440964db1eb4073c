"""``qb.StorageDaemon(lab, "d.qcow2")``: block jobs on images that no VM has open.

``qemu-storage-daemon`` is QEMU's block layer without a machine: it opens each image's backing chain with one
``--blockdev`` per layer (a qcow2 node over a file node, named ``node-A``, ``node-B``, ... from the base up,
as in the seed), answers QMP on a unix socket, and serves each image over NBD (``nbd-server-start`` and
``block-export-add``).  It has no guest device, so its exports stand in for the disks: ``export0`` for the
first image, and ``vm.chain()`` follows what the export serves, through a pivot as a device's chain does::

    vm = qb.StorageDaemon(lab, "d.qcow2")
    str(vm.chain()), vm.device     # ('[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]', 'export0')
    vm.block_stream(device="node-D", job_id="job0").wait()   # the same Machine API as a Lab's QEMU

What a guest would read is read through the export (``vm.verify``, ``vm.compare``, ``vm.uri()``); the lab ends
the daemon with its QEMUs (quit, SIGTERM, SIGKILL).
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import TYPE_CHECKING

from qblocknb.errors import InputError
from qblocknb.live.exportio import ExportIO
from qblocknb.live.machine import Machine
from qblocknb.live.process import tie_to_parent
from qblocknb.live.tools import require
from qblocknb.model.paths import resolve

if TYPE_CHECKING:
    from qblocknb.live.lab import Lab

DAEMON = "qemu-storage-daemon"


def node_name(position: int) -> str:
    """``node-A`` for the first layer opened, ``node-B`` next, as the seed names them; ``node-27`` past Z."""
    return f"node-{string.ascii_uppercase[position]}" if position < len(string.ascii_uppercase) else f"node-{position}"


def layer_nodes(chains: list[list[dict]]) -> dict[str, dict]:
    """One ``--blockdev`` per layer of each chain (``qemu-img info --backing-chain``, active first), each layer
    once even where chains share it: the qcow2 (or raw) node over its file node, on the node below it.

    Layers under an active image are opened read-only, as QEMU opens backing files; a commit reopens its base.
    """
    nodes: dict[str, dict] = {}
    for chain in chains:
        below = None
        for depth, (file, info) in enumerate(zip(reversed(layer_files(chain)), reversed(chain), strict=True)):
            if file not in nodes:
                name = node_name(len(nodes))
                node = {
                    "driver": info["format"],
                    "node-name": name,
                    "file": {"driver": "file", "filename": file, "node-name": f"file-{name}"},
                }
                if below is not None:
                    node["backing"] = below
                if depth < len(chain) - 1:
                    node["read-only"], node["file"]["auto-read-only"] = True, True
                nodes[file] = node
            below = nodes[file]["node-name"]
    return nodes


def layer_files(chain: list[dict]) -> list[str]:
    """Each layer's file as a full path, active first: a backing name is relative to its overlay's folder."""
    files = [str(Path(chain[0]["filename"]).resolve())]
    for info in chain[1:]:
        files.append(str(resolve(info["filename"], Path(files[-1]).parent)))
    return files


def command_line(nodes: list[dict], qmp_socket: Path) -> list[str]:
    """``qemu-storage-daemon`` with a QMP monitor on ``qmp_socket`` and the given ``--blockdev`` nodes."""
    socket = str(qmp_socket).replace(",", ",,")  # QEMU's option syntax doubles a comma
    args = [
        require(DAEMON),
        "--chardev",
        f"socket,id=qmp0,path={socket},server=on,wait=off",
        "--monitor",
        "chardev=qmp0",
    ]
    for node in nodes:
        args += ["--blockdev", json.dumps(node)]
    return [*tie_to_parent(), *args]


class StorageDaemon(Machine):
    """A ``qemu-storage-daemon`` on a lab's images, as a Machine whose disks are its NBD exports."""

    def __init__(self, lab: Lab, *images: str, name: str | None = None) -> None:
        if not images:
            raise InputError(
                "a storage daemon needs an image", "it exports each image it is given", "pass one: 'd.qcow2'"
            )
        chains = [lab.info(image) for image in images]
        nodes = layer_nodes(chains)
        name = name or f"qsd{len(lab.machines)}"
        process, session = lab.spawn(name, lambda socket: command_line(list(nodes.values()), socket))
        super().__init__(session, process, cwd=lab.path, device="export0")
        lab.machines.append(self)  # from here on the lab ends it, even if the exports below fail
        socket = lab.socket_path(f"{name}.nbd.sock")
        self.guest_io = ExportIO(self, socket)
        self.query("nbd-server-start", {"addr": {"type": "unix", "data": {"path": str(socket)}}})
        for number, chain in enumerate(chains):
            top = nodes[layer_files(chain)[0]]["node-name"]
            export = {"type": "nbd", "id": f"export{number}", "name": f"export{number}", "writable": True}
            self.query("block-export-add", {**export, "node-name": top})

    def uri(self, device: str | None = None) -> str:
        """The NBD URI of an export (``vm.device`` by default), for ``qemu-io``, ``qemu-img`` or another QEMU."""
        return self.guest_io.uri(device)
