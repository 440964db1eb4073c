"""The seed's example chain ``[A] <-- [B] <-- [C] <-- [D]``, with data you can check.

Each layer holds its own pattern, so every point in time reads differently:
A fills the first 4 MiB with 0xA1, then B, C and D each overwrite one MiB
(1, 2 and 3) with 0xB2, 0xC3 and 0xD4.  ``expected_view("ABCD")`` is what the
guest reads through the whole chain::

    >>> expected_view("AB")
    [(0, 1048576, 161), (1048576, 1048576, 178), (2097152, 2097152, 161)]
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from qblocknb.live.lab import Lab
from qblocknb.live.machine import Machine

MiB = 1 << 20


@dataclass(frozen=True)
class Layer:
    letter: str
    file: str
    node_name: str
    offset: int
    length: int
    pattern: int


LAYERS = (
    Layer("A", "a.qcow2", "node-A", 0, 4 * MiB, 0xA1),
    Layer("B", "b.qcow2", "node-B", 1 * MiB, MiB, 0xB2),
    Layer("C", "c.qcow2", "node-C", 2 * MiB, MiB, 0xC3),
    Layer("D", "d.qcow2", "node-D", 3 * MiB, MiB, 0xD4),
)
BY_LETTER = {layer.letter: layer for layer in LAYERS}


def expected_view(letters: str) -> list[tuple[int, int, int]]:
    """The ``(offset, length, pattern)`` runs a reader sees through the given layers (base first)."""
    per_mib = [0] * 4
    for letter in letters:
        layer = BY_LETTER[letter]
        for mib in range(layer.offset // MiB, (layer.offset + layer.length) // MiB):
            per_mib[mib] = layer.pattern
    runs: list[tuple[int, int, int]] = []
    for mib, pattern in enumerate(per_mib):
        if runs and runs[-1][2] == pattern:
            start, length, _ = runs[-1]
            runs[-1] = (start, length + MiB, pattern)
        else:
            runs.append((mib * MiB, MiB, pattern))
    return runs


def build_seed_chain(lab: Lab, size: str = "64M", accel: str | None = None) -> Machine:
    """Create A offline, launch QEMU on it, then add B, C, D live with ``blockdev-snapshot-sync``.

    Each new layer gets its pattern through a guest write, as a running guest would.
    """
    base = LAYERS[0]
    lab.create(base.file, size=size)
    lab.write(base.file, base.offset, base.length, pattern=base.pattern)
    vm = lab.launch(base.file, node_name=base.node_name, accel=accel)
    for below, layer in itertools.pairwise(LAYERS):
        vm.blockdev_snapshot_sync(
            node_name=below.node_name, snapshot_file=layer.file, snapshot_node_name=layer.node_name, format="qcow2"
        )
        vm.write(vm.device, layer.offset, layer.length, pattern=layer.pattern)
    return vm
