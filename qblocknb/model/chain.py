"""The backing chain as plain data: images base first, in the seed's notation.

A ``Chain`` is built either from a live QEMU (``query-block`` and
``query-named-block-nodes``) or from files on disk (``qemu-img info
--backing-chain``); the model itself does no I/O::

    >>> chain = Chain.from_image_info([
    ...     {"filename": "/lab/b.qcow2", "format": "qcow2", "virtual-size": 65536, "backing-filename": "/lab/a.qcow2"},
    ...     {"filename": "/lab/a.qcow2", "format": "qcow2", "virtual-size": 65536}])
    >>> str(chain)
    '[a.qcow2] <-- [b.qcow2]'
    >>> chain.active.name, chain.base.name
    ('b.qcow2', 'a.qcow2')
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import PurePath

from qblocknb.errors import InputError
from qblocknb.model.nbd import is_nbd

FILTER_DRIVERS = {
    "mirror_top",
    "commit_top",
    "copy-on-read",
    "throttle",
    "backup-top",
    "copy-before-write",
    "blkdebug",
    "blkverify",
    "compress",
    "preallocate",
    "snapshot-access",
}
PROTOCOL_DRIVERS = {
    "file",
    "host_device",
    "host_cdrom",
    "nbd",
    "null-co",
    "null-aio",
    "nvme",
    "ssh",
    "http",
    "https",
    "iscsi",
    "rbd",
    "gluster",
    "nfs",
}


def display_name(file: str) -> str:
    """A file's basename; for ``json:`` names the image's own file (not its backing's) and the filter over it;
    URIs whole.

    >>> display_name('json:{"driver": "blkdebug", "image": {"driver": "file", "filename": "/lab/e.qcow2"}}')
    'e.qcow2 (blkdebug)'
    >>> display_name('json:{"backing": {"driver": "qcow2", "file": {"driver": "file", "filename": "/lab/b.qcow2"}},'
    ...              ' "driver": "qcow2", "file": {"driver": "file", "filename": "d.qcow2"}}')
    'd.qcow2'
    """
    if file.startswith("json:"):
        try:
            options = json.loads(file[5:])
        except json.JSONDecodeError:
            return file
        inner, drivers = _innermost_name(options)
        shown = [driver for driver in drivers if driver in FILTER_DRIVERS | PROTOCOL_DRIVERS - {"file"}]
        return (display_name(inner) + (f" ({shown[0]})" if shown else "")) if inner else file
    if "://" in file or is_nbd(file):
        return file
    return PurePath(file).name or file


def _innermost_name(options: object) -> tuple[str | None, list[str]]:
    """The first ``filename`` or NBD ``export`` in a json: options tree, below its own ``file``/``image`` (a
    ``backing`` entry names another image), with the drivers met on the way down."""
    if not isinstance(options, dict):
        return None, []
    drivers = [options["driver"]] if isinstance(options.get("driver"), str) else []
    for key in ("filename", "export"):
        if isinstance(options.get(key), str):
            return options[key], drivers
    for key, value in options.items():
        if key == "backing":
            continue
        found, below = _innermost_name(value)
        if found:
            return found, drivers + below
    return None, drivers


def same_file(first: str, second: str) -> bool:
    """Whether two of QEMU's file names name one image: ``json:`` names are compared as options, since QEMU
    does not keep one key order between a node's name and its overlay's backing name."""
    if first == second:
        return True
    if not (first.startswith("json:") and second.startswith("json:")):
        return False
    try:
        return json.loads(first[5:]) == json.loads(second[5:])
    except json.JSONDecodeError:
        return False


@dataclass(frozen=True)
class Bitmap:
    """A dirty bitmap on a node."""

    name: str
    granularity: int
    dirty_bytes: int = 0
    recording: bool = True
    persistent: bool = False
    busy: bool = False


@dataclass(frozen=True)
class JobInfo:
    """A job as the chain diagram shows it: which nodes it reads and writes."""

    id: str
    type: str
    status: str
    offset: int = 0
    length: int = 0
    source: str | None = None  # node name or file
    target: str | None = None  # node name or file


@dataclass(frozen=True)
class FilterInfo:
    """A named filter node over the active layer: one the guest device reads and writes through (``on_path``), such
    as a pull backup's ``copy-before-write`` (``target``: its point-in-time scratch image), or one reading such a
    filter, such as the ``snapshot-access`` view an export serves."""

    node_name: str
    driver: str
    child: str | None = None  # the node it reads: the active layer, or a filter below
    target: str | None = None  # copy-before-write's target node
    on_path: bool = True


@dataclass(frozen=True)
class ExportInfo:
    """A block export of a node the diagram draws (``query-block-exports``), with its URI when it is known."""

    id: str
    node_name: str
    type: str = "nbd"
    uri: str | None = None  # QEMU does not report its NBD server's address: only when this session started it


@dataclass(frozen=True)
class Image:
    """One layer of a chain."""

    file: str
    format: str
    virtual_size: int
    allocated_size: int | None = None
    node_name: str | None = None
    backing_file: str | None = None
    read_only: bool = False
    device: str | None = None
    bitmaps: tuple[Bitmap, ...] = ()
    jobs: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return display_name(self.file)

    @property
    def automatic(self) -> bool:
        """True when QEMU named the node itself (``#block123``, from ``-drive``): shown by its file name."""
        return bool(self.node_name and self.node_name.startswith("#"))

    @property
    def names(self) -> set[str]:
        """Every name this image answers to: its node name, its file as QEMU knows it, its basename."""
        return {name for name in (self.node_name, self.file, self.name) if name}

    @property
    def label(self) -> str:
        """The node name the user gave, else the file's basename."""
        return self.name if self.automatic or not self.node_name else self.node_name


@dataclass(frozen=True)
class RetiredImage:
    """An image that left the chain, with the seed's rule on whether it is still usable."""

    file: str
    node_name: str | None
    left_by: str  # the job type that removed it
    valid: bool
    note: str
    reads_through: tuple[str, ...] = ()  # the files below it when it left: its own backing chain still

    @property
    def name(self) -> str:
        return display_name(self.file)


RETIREMENT_RULES = {
    "stream": (True, "still valid: a point in time; safe to delete or keep"),
    "commit": (False, "invalid: do not use"),
    "mirror": (True, "left by a mirror pivot: holds the guest state at the pivot"),
}


def retire(image: Image, job_type: str, reads_through: tuple[str, ...] = ()) -> RetiredImage:
    """Apply the seed's rule to an image that a job of ``job_type`` removed from the chain."""
    valid, note = RETIREMENT_RULES.get(job_type, (True, f"left the chain after {job_type}"))
    return RetiredImage(image.file, image.node_name, job_type, valid, note, reads_through)


def written_into(retired: tuple[RetiredImage, ...], file: str, job_type: str) -> tuple[RetiredImage, ...]:
    """The seed's rule carried on: an image left valid by a stream stops being its point in time once a later job
    (a commit) writes into an image it still reads through.

    >>> kept = retire(Image("/lab/b.qcow2", "qcow2", 0), "stream", ("/lab/a.qcow2",))
    >>> [(r.valid, r.note) for r in written_into((kept,), "/lab/a.qcow2", "commit")]
    [(False, 'invalid: a later commit wrote into a.qcow2, which it reads through')]
    """
    note = f"invalid: a later {job_type} wrote into {display_name(file)}, which it reads through"
    return tuple(replace(r, valid=False, note=note) if r.valid and file in r.reads_through else r for r in retired)


@dataclass(frozen=True)
class ChainDiff:
    """What changed between two chains: files added, removed and re-pointed."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    repointed: tuple[tuple[str, str | None, str | None], ...]  # (file, old backing, new backing)
    active_changed: bool

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.repointed or self.active_changed)

    def __str__(self) -> str:
        parts = [f"+{display_name(f)}" for f in self.added] + [f"-{display_name(f)}" for f in self.removed]
        parts += [
            f"{display_name(f)}: {display_name(old) if old else 'none'} -> {display_name(new) if new else 'none'}"
            for f, old, new in self.repointed
        ]
        return ", ".join(parts) or "no change"


@dataclass(frozen=True)
class Chain:
    """Images base first; the last one is the active layer."""

    images: tuple[Image, ...]
    device: str | None = None
    jobs: tuple[JobInfo, ...] = ()
    targets: tuple[Image, ...] = ()  # job targets outside the chain
    retired: tuple[RetiredImage, ...] = ()
    other_nodes: tuple[Image, ...] = field(default=(), repr=False)  # named format nodes not in the chain
    filter_nodes: tuple[str, ...] = field(default=(), repr=False)  # named filter and protocol nodes (blkdebug, file)
    filters: tuple[FilterInfo, ...] = field(default=(), repr=False)  # named filters over the active layer, bottom up
    exports: tuple[ExportInfo, ...] = field(default=(), repr=False)  # exports of filters and targets outside it

    def __str__(self) -> str:
        return " <-- ".join(f"[{image.name}]" for image in self.images)

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self):
        return iter(self.images)

    @property
    def active(self) -> Image:
        return self.images[-1]

    @property
    def base(self) -> Image:
        return self.images[0]

    @property
    def node_names(self) -> list[str]:
        """The chain's node names as QEMU accepts them (automatic ``#block`` names included)."""
        return [image.node_name for image in self.images if image.node_name]

    @property
    def known_node_names(self) -> set[str]:
        """Every node name QEMU would accept as a job target: the chain, other images, filters and protocols."""
        others = {image.node_name for image in self.other_nodes if image.node_name}
        return set(self.node_names) | others | set(self.filter_nodes)

    @property
    def files(self) -> list[str]:
        return [image.file for image in self.images]

    def find(self, name: str) -> Image | None:
        """The image with this node name, file path or basename, if it is in the chain."""
        for image in self.images:
            if name in image.names:
                return image
        return None

    def index(self, name: str) -> int:
        """Position from the base (0) up; -1 when absent."""
        image = self.find(name)
        return self.images.index(image) if image else -1

    def below(self, name: str) -> list[Image]:
        """The images under ``name``, nearest first."""
        position = self.index(name)
        return list(reversed(self.images[:position])) if position > 0 else []

    def diff(self, earlier: Chain) -> ChainDiff:
        """What changed since ``earlier``."""
        old = {image.file: image for image in earlier.images}
        new = {image.file: image for image in self.images}
        repointed = tuple(
            (f, old[f].backing_file, new[f].backing_file)
            for f in new
            if f in old and old[f].backing_file != new[f].backing_file
        )
        return ChainDiff(
            added=tuple(f for f in new if f not in old),
            removed=tuple(f for f in old if f not in new),
            repointed=repointed,
            active_changed=bool(earlier.images and self.images) and earlier.active.file != self.active.file,
        )

    def with_extras(
        self, jobs: tuple[JobInfo, ...] = (), targets: tuple[Image, ...] = (), retired: tuple[RetiredImage, ...] = ()
    ) -> Chain:
        """A copy annotated with jobs, their targets and retired images; images learn their jobs."""
        touching: dict[str, list[str]] = {}
        for job in jobs:
            for name in (job.source, job.target):
                if name:
                    touching.setdefault(name, []).append(job.id)
        images = tuple(
            replace(image, jobs=tuple(touching.get(image.node_name or "", []) + touching.get(image.file, [])))
            for image in self.images
        )
        return replace(self, images=images, jobs=jobs, targets=targets, retired=retired)

    # -- builders ----------------------------------------------------------------------------
    @classmethod
    def from_image_info(cls, infos: list[dict]) -> Chain:
        """From ``qemu-img info --backing-chain --output=json`` (active image first)."""
        images = []
        for info in infos:
            bitmaps = tuple(
                Bitmap(
                    name=b["name"],
                    granularity=b.get("granularity", 0),
                    recording="auto" in b.get("flags", []),
                    persistent=True,
                )
                for b in info.get("format-specific", {}).get("data", {}).get("bitmaps", [])
            )
            images.append(
                Image(
                    file=info["filename"],
                    format=info["format"],
                    virtual_size=info["virtual-size"],
                    allocated_size=info.get("actual-size"),
                    backing_file=info.get("full-backing-filename") or info.get("backing-filename"),
                    bitmaps=bitmaps,
                )
            )
        return cls(tuple(reversed(images)))

    @classmethod
    def from_qmp(cls, block_devices: list[dict], named_nodes: list[dict], device: str | None = None) -> Chain:
        """From ``query-block`` and ``query-named-block-nodes`` (``flat: true``)."""
        entry = pick_disk(block_devices, device)
        nodes = {node["node-name"]: node for node in named_nodes}
        formats = [node for node in named_nodes if _is_format_node(node)]
        chain: list[Image] = []
        current = _below_filters(nodes.get(entry["inserted"]["node-name"]), nodes, formats)
        if current is None:
            raise InputError(
                f"node {entry['inserted']['node-name']} of {device_id(entry)} is not among QEMU's named nodes",
                "query-named-block-nodes does not list it",
                "report this with the output of query-block",
            )
        device_name = device_id(entry)
        seen: set[str] = set()
        while current is not None and current["node-name"] not in seen:
            seen.add(current["node-name"])
            chain.append(image_from_node(current, device_name if not chain else None))
            current = _backing_node(current, nodes, formats)
        in_chain = {image.node_name for image in chain}
        others = tuple(
            image_from_node(node)
            for node in formats
            if node["node-name"] not in in_chain and not node["node-name"].startswith("#")
        )
        filters = tuple(
            node["node-name"]
            for node in named_nodes
            if not _is_format_node(node) and not node["node-name"].startswith("#")
        )
        return cls(tuple(reversed(chain)), device=device_name, other_nodes=others, filter_nodes=filters)


def device_id(entry: dict) -> str:
    """How a disk is called: its drive name (``-drive``), else its device id (``virtio-disk0``), else its qdev path.

    >>> device_id({"device": "", "qdev": "/machine/peripheral/virtio-disk0/virtio-backend"})
    'virtio-disk0'
    >>> device_id({"device": "", "qdev": "scsi-disk1"})
    'scsi-disk1'
    """
    if entry.get("device"):
        return entry["device"]
    qdev = entry.get("qdev", "")
    parts = qdev.strip("/").split("/")
    if len(parts) >= 3 and parts[0] == "machine" and parts[1] == "peripheral":
        return parts[2]
    return qdev


def disk_names(entry: dict) -> set[str]:
    """Every name that identifies this disk: drive name, device id, qdev path, root node name."""
    qdev = entry.get("qdev", "")
    names = {device_id(entry), entry.get("device") or "", qdev, (entry.get("inserted") or {}).get("node-name", "")}
    parts = qdev.strip("/").split("/")
    if len(parts) >= 3 and parts[1] in ("peripheral", "peripheral-anon"):
        names.add(parts[2])
    return names - {""}


def disks(block_devices: list[dict]) -> list[dict]:
    """The query-block entries that hold a medium (empty CD-ROM drives and floppies left out)."""
    return [entry for entry in block_devices if entry.get("inserted")]


def export_disks(exports: list[dict]) -> list[dict]:
    """A QEMU with no guest device (``qemu-storage-daemon``) has its block exports in their place: each one as a
    ``query-block`` entry named by its id, on the node it serves, which follows a pivot as a device's does.

    >>> export_disks([{"id": "export0", "node-name": "node-D", "type": "nbd", "shutting-down": False}])
    [{'device': 'export0', 'qdev': '', 'inserted': {'node-name': 'node-D'}}]
    """
    return [
        {"device": export["id"], "qdev": "", "inserted": {"node-name": export["node-name"]}}
        for export in exports
        if not export.get("shutting-down")
    ]


def pick_disk(block_devices: list[dict], device: str | None) -> dict:
    """The disk called ``device``; with ``None``, the only disk, or a sentence naming all of them."""
    with_media = disks(block_devices)
    names = ", ".join(device_id(e) for e in with_media) or "none"
    if device is None:
        if len(with_media) == 1:
            return with_media[0]
        if not with_media:
            raise InputError("this QEMU has no disk", "query-block lists no device with a medium", "attach one first")
        raise InputError(
            f"this QEMU has {len(with_media)} disks ({names})",
            "the command or view needs to know which one",
            f"set vm.device = '{device_id(with_media[0])}' or pass device=",
        )
    for entry in with_media:
        if device in disk_names(entry):
            return entry
    raise InputError(f"device '{device}' has no medium or does not exist", f"devices are {names}", "pass one of those")


def _is_format_node(node: dict) -> bool:
    return node.get("drv") not in PROTOCOL_DRIVERS | FILTER_DRIVERS


def _backing_node(node: dict, nodes: dict[str, dict], formats: list[dict]) -> dict | None:
    for child in node.get("children", []):  # QEMU 10.1+ names the children directly
        if child.get("child") == "backing":
            return _below_filters(nodes.get(child.get("node-name")), nodes, formats)
    image = node.get("image", {})
    others = [n for n in formats if n is not node]
    # The full name first; then the name as written in the header, which is how QEMU named a node it opened by a
    # relative name (``c.qcow2``) while a target it created knows that layer by its full path.
    for backing in dict.fromkeys(filter(None, (image.get("full-backing-filename"), node.get("backing_file")))):
        matches = [n for n in others if same_file(n["file"], backing)] or [
            n for n in others if _own_file(n["file"]) == _own_file(backing) or _relative_match(n["file"], backing)
        ]
        if matches:
            return matches[0]
    return None


def _own_file(file: str) -> str:
    """The image's own file in a ``json:`` name (what a reopened node is called), else the name itself."""
    if not file.startswith("json:"):
        return file
    try:
        return _innermost_name(json.loads(file[5:]))[0] or file
    except json.JSONDecodeError:
        return file


def _relative_match(file: str, backing: str) -> bool:
    """A backing name written relative to its overlay (``c.qcow2``) against a node named by its full path."""
    own = _own_file(file)
    return not PurePath(backing).is_absolute() and PurePath(own).parts[-len(PurePath(backing).parts) :] == (
        PurePath(backing).parts
    )


def _below_filters(node: dict | None, nodes: dict[str, dict], formats: list[dict]) -> dict | None:
    """The image under any filters a job put on top (copy-before-write during a backup, for one).

    Without named children (QEMU before 10.1) a filter is matched to the image node that shares its file name.
    """
    seen: set[str] = set()
    while node is not None and not _is_format_node(node) and node["node-name"] not in seen:
        seen.add(node["node-name"])
        named = [nodes.get(c["node-name"]) for c in node.get("children", []) if c.get("child") in ("file", "backing")]
        sharing = [n for n in formats if same_file(n["file"], node["file"])]
        node = next((n for n in named + sharing if n is not None), None)
    return node


def image_from_node(node: dict, device: str | None = None) -> Image:
    """One BlockDeviceInfo (from query-named-block-nodes) as an Image."""
    image = node.get("image", {})
    bitmaps = tuple(
        Bitmap(
            name=b["name"],
            granularity=b.get("granularity", 0),
            dirty_bytes=b.get("count", 0),
            recording=b.get("recording", True),
            persistent=b.get("persistent", False),
            busy=b.get("busy", False),
        )
        for b in node.get("dirty-bitmaps", [])
        if "name" in b  # a running mirror's own bitmap has no name
    )
    return Image(
        file=node["file"],
        format=node["drv"],
        virtual_size=image.get("virtual-size", 0),
        allocated_size=image.get("actual-size"),
        node_name=node["node-name"],
        backing_file=image.get("full-backing-filename") or node.get("backing_file"),
        read_only=bool(node.get("ro")),
        device=device,
        bitmaps=bitmaps,
    )
