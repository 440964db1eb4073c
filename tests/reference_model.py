"""A reference model of a disk's backing chain: what each image holds, what the guest must read, what is chained.

It knows nothing of QEMU. Each image holds some 64 KiB clusters, each with one byte pattern, and points at its
backing image; what an image reads is, per cluster, the pattern of the first image down its backing chain that
holds the cluster (0 where none does). The chain is the list of images the device reads through, base first.
Each operation says, in these terms, what the seed says a live block operation does::

    >>> model = Model(clusters=4, base={0: 0xA1, 1: 0xA1})
    >>> model.write(1, 2, 0xB2)
    >>> model.snapshot().file
    'img1.qcow2'
    >>> model.write(3, 1, 0xC3)
    >>> str(model), model.view()
    ('[img0.qcow2] <-- [img1.qcow2]', [161, 178, 178, 195])
    >>> model.stream(1, None)  # block-stream device=node-1: everything into the top, which then stands alone
    >>> str(model), model.view(), model.chain[0].clusters == {0: 0xA1, 1: 0xB2, 2: 0xB2, 3: 0xC3}
    ('[img1.qcow2]', [161, 178, 178, 195], True)
    >>> runs(model.view(), cluster=1)
    [(0, 1, 161), (1, 2, 178), (3, 1, 195)]
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

CLUSTER = 64 << 10  # qcow2's default cluster size; every write the model takes is a whole number of them


@dataclass(eq=False)
class Image:
    """One image file: the clusters it holds itself (index -> pattern) and the image it is backed by."""

    file: str
    node: str
    backing: Image | None = None
    clusters: dict[int, int] = field(default_factory=dict)

    def chain(self) -> list[Image]:
        """This image's own backing chain, base first, as ``qemu-img info --backing-chain`` finds it."""
        below = self.backing.chain() if self.backing is not None else []
        return [*below, self]

    def view(self, clusters: int) -> list[int]:
        """The pattern a reader of this image sees in each cluster, through its backing chain."""
        seen = [0] * clusters
        for image in self.chain():
            for index, pattern in image.clusters.items():
                seen[index] = pattern
        return seen


def merged(images: list[Image]) -> dict[int, int]:
    """The clusters a stack of images (base first) holds between them: the topmost holder of each wins."""
    clusters: dict[int, int] = {}
    for image in images:
        clusters.update(image.clusters)
    return clusters


def notation(images: list[Image]) -> str:
    """The seed's notation, as ``str(qb.Chain)`` writes it: ``[a.qcow2] <-- [b.qcow2]``."""
    return " <-- ".join(f"[{image.file}]" for image in images)


def runs(view: list[int], cluster: int = CLUSTER, start: int = 0, end: int | None = None) -> list[tuple[int, int, int]]:
    """``(offset, length, pattern)`` runs in bytes, for ``vm.verify``, of clusters ``start`` up to ``end``."""
    found: list[tuple[int, int, int]] = []
    index = start
    for pattern, same in itertools.groupby(view[start:end]):
        count = len(list(same))
        found.append((index * cluster, count * cluster, pattern))
        index += count
    return found


class Model:
    """The device's chain and every image ever made, changed as each operation says it changes them."""

    def __init__(self, clusters: int, base: dict[int, int]) -> None:
        self.clusters = clusters
        self.images: list[Image] = []  # every image made, in order, in the chain or not
        self.chain: list[Image] = [self.new_image(clusters=base)]

    def __str__(self) -> str:
        return notation(self.chain)

    @property
    def top(self) -> Image:
        return self.chain[-1]

    def next_names(self) -> tuple[str, str]:
        """The file and node name the next image made will have."""
        number = len(self.images)
        return f"img{number}.qcow2", f"node-{number}"

    def new_image(self, backing: Image | None = None, clusters: dict[int, int] | None = None) -> Image:
        """A new image named in order of making: ``img<N>.qcow2`` as node ``node-<N>``."""
        image = Image(*self.next_names(), backing, dict(clusters or {}))
        self.images.append(image)
        return image

    def view(self) -> list[int]:
        """What the guest reads: the active image through its chain."""
        return self.top.view(self.clusters)

    # -- the operations -------------------------------------------------------------------------
    def write(self, first: int, count: int, pattern: int) -> None:
        """A guest write lands in the active image."""
        for index in range(first, first + count):
            self.top.clusters[index] = pattern

    def snapshot(self) -> Image:
        """``blockdev-snapshot-sync``: a new, empty overlay on top becomes the active image."""
        overlay = self.new_image(backing=self.top)
        self.chain.append(overlay)
        return overlay

    def stream(self, device: int, base: int | None) -> None:
        """``block-stream``: the images between ``base`` and ``device`` are copied into ``device`` and leave.

        Clusters ``device`` holds itself stay (a guest write wins over the copy); without a base, everything below
        is copied and ``device`` stands alone.
        """
        keep = self.chain[: base + 1] if base is not None else []
        target = self.chain[device]
        target.clusters = merged(self.chain[len(keep) : device + 1])
        target.backing = keep[-1] if keep else None
        self.chain = [*keep, *self.chain[device:]]

    def commit(self, top: int, base: int, pivot: bool = True) -> None:
        """``block-commit``: the images above ``base`` up to ``top`` are written into ``base``.

        An intermediate commit re-points the image above ``top`` at ``base``; an active commit (``top`` is the
        active image) pivots the device onto ``base`` on ``complete`` (``pivot``), and on a cancel after READY
        leaves the chain as it was, with ``base`` already rewritten.
        """
        into = self.chain[base]
        into.clusters = merged(self.chain[base : top + 1])
        if top < len(self.chain) - 1:
            self.chain[top + 1].backing = into
            self.chain = [*self.chain[: base + 1], *self.chain[top + 1 :]]
        elif pivot:
            self.chain = self.chain[: base + 1]

    def mirror(self, sync: str, pivot: bool) -> Image:
        """``drive-mirror`` to a new image: ``full`` copies the guest's view into a standalone image, ``top``
        copies the active image's own clusters into one on the same backing. ``complete`` (``pivot``) moves the
        device onto the copy; a cancel after READY leaves the chain, and the copy is the disk at that moment.
        """
        source = self.top
        if sync == "full":
            view = self.view()
            copy = self.new_image(clusters={i: p for i, p in enumerate(view) if p})
        else:
            copy = self.new_image(backing=source.backing, clusters=source.clusters)
        if pivot:
            self.chain = [*self.chain[:-1], copy] if sync == "top" else [copy]
        return copy

    def backup(self) -> Image:
        """``drive-backup sync=full``: a standalone copy of the guest's view at the job's start."""
        return self.new_image(clusters={i: p for i, p in enumerate(self.view()) if p})
