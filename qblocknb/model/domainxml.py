"""A libvirt domain's disks as its live XML tells them, and as the QMP answers a Machine reads.

libvirt keeps the truth about each disk's chain in its live XML: the active layer's ``<source index=N>``
and the nested ``<backingStore index=M>`` below it, with ``<mirror ready='yes'>`` while a copy or an
active commit waits for its pivot.  virsh names each layer ``vda[N]`` (``N`` is that index: read it, never
count it).  The libvirt-native backend draws chains from here, so that what qblocknb shows is what libvirt
will boot; it turns them into the ``query-block`` / ``query-named-block-nodes`` shapes that the chain model
already reads, with each layer's node name being its virsh name::

    >>> xml = '''<domain><name>vm1</name><devices><disk type='file' device='disk'>
    ...   <driver name='qemu' type='qcow2'/><source file='/v/b.qcow2' index='2'/>
    ...   <backingStore type='file' index='1'><format type='qcow2'/><source file='/v/a.qcow2'/>
    ...     <backingStore/></backingStore>
    ...   <target dev='vda' bus='virtio'/><alias name='virtio-disk0'/></disk></devices></domain>'''
    >>> disk = parse_disks(xml)[0]
    >>> disk.target, [(layer.name, layer.file) for layer in disk.layers]
    ('vda', [('vda[2]', '/v/b.qcow2'), ('vda[1]', '/v/a.qcow2')])
    >>> [node["node-name"] for node in named_nodes([disk])]
    ['vda[2]', 'vda[1]']
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

LAYER_NAME = re.compile(r"^(?P<disk>[a-z]+)\[(?P<index>\d+)\]$")


@dataclass(frozen=True)
class Layer:
    """One image of a disk's chain, top first in ``Disk.layers``."""

    disk: str
    index: int | None
    file: str
    format: str

    @property
    def name(self) -> str:
        """The layer as virsh names it (``vda[3]``); its file when libvirt gave it no index."""
        return f"{self.disk}[{self.index}]" if self.index is not None else self.file


@dataclass(frozen=True)
class Mirror:
    """A copy or active commit under way on a disk (``<mirror>``): its job kind and whether it is READY."""

    job: str  # libvirt's word: "copy" or "active-commit"
    file: str
    format: str
    ready: bool


@dataclass(frozen=True)
class Disk:
    """One disk of the domain: its target (``vda``), libvirt's device alias, and its chain, top first."""

    target: str
    alias: str
    layers: tuple[Layer, ...]
    read_only: bool = False
    mirror: Mirror | None = None
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict, compare=False)  # file -> (capacity, allocation)

    @property
    def active(self) -> Layer:
        return self.layers[0]


def parse_disks(xml: str) -> list[Disk]:
    """The file-backed disks of a domain's live XML (``virDomainGetXMLDesc``), CD-ROMs and empty drives left out."""
    root = ET.fromstring(xml)
    found = []
    for element in root.iterfind("./devices/disk"):
        target = element.find("target")
        source = element.find("source")
        if target is None or source is None or not _source_file(source):
            continue
        dev = target.get("dev", "")
        alias = element.find("alias")
        driver = element.find("driver")
        top = Layer(
            dev, _index(source), _source_file(source), driver.get("type", "raw") if driver is not None else "raw"
        )
        layers = [top, *_backing_layers(element, dev)]
        found.append(
            Disk(
                dev,
                alias.get("name", "") if alias is not None else "",
                tuple(layers),
                element.find("readonly") is not None,
                _mirror(element),
            )
        )
    return found


def _backing_layers(element: ET.Element, dev: str) -> list[Layer]:
    layers = []
    backing = element.find("backingStore")
    while backing is not None:
        source = backing.find("source")
        if source is None or not _source_file(source):  # <backingStore/>: the end of the chain
            break
        fmt = backing.find("format")
        index = backing.get("index")
        layers.append(
            Layer(
                dev,
                int(index) if index else None,
                _source_file(source),
                fmt.get("type", "raw") if fmt is not None else "raw",
            )
        )
        backing = backing.find("backingStore")
    return layers


def _mirror(element: ET.Element) -> Mirror | None:
    mirror = element.find("mirror")
    if mirror is None:
        return None
    source = mirror.find("source")
    fmt = mirror.find("format")
    return Mirror(
        mirror.get("job", "copy"),
        mirror.get("file") or (_source_file(source) if source is not None else ""),
        mirror.get("format") or (fmt.get("type", "raw") if fmt is not None else "raw"),
        mirror.get("ready") == "yes",
    )


def _source_file(source: ET.Element) -> str:
    return source.get("file") or source.get("dev") or ""


def _index(source: ET.Element) -> int | None:
    index = source.get("index")
    return int(index) if index else None


def sizes_from_stats(stats: dict) -> dict[str, tuple[int, int]]:
    """Each image's (capacity, bytes on the host) from ``virConnectGetAllDomainStats`` with the backing chain.

    >>> stats = {"block.count": 1, "block.0.path": "/v/a.qcow2", "block.0.capacity": 64, "block.0.physical": 8}
    >>> sizes_from_stats(stats)
    {'/v/a.qcow2': (64, 8)}
    """
    found = {}
    for position in range(int(stats.get("block.count", 0))):
        path = stats.get(f"block.{position}.path")
        if path:
            used = stats.get(f"block.{position}.physical", stats.get(f"block.{position}.allocation", 0))
            found[path] = (int(stats.get(f"block.{position}.capacity", 0)), int(used))
    return found


def block_devices(disks: list[Disk]) -> list[dict]:
    """``query-block`` as QEMU would answer it, each disk called by its target (``vda``) and its alias."""
    entries = []
    for disk in disks:
        top = disk.active
        entries.append(
            {
                "device": disk.target,
                "qdev": f"/machine/peripheral/{disk.alias}/virtio-backend" if disk.alias else disk.target,
                "locked": False,
                "removable": False,
                "type": "unknown",
                "inserted": {
                    "node-name": top.name,
                    "file": top.file,
                    "drv": top.format,
                    "ro": disk.read_only,
                    "backing_file_depth": len(disk.layers) - 1,
                    "image": _image(disk, 0),
                },
            }
        )
    return entries


def named_nodes(disks: list[Disk], bitmaps: dict[str, list[dict]] | None = None) -> list[dict]:
    """``query-named-block-nodes`` (flat) as QEMU would answer it: one format node per layer, named as virsh names it.

    ``bitmaps`` maps a disk target to the dirty bitmaps (libvirt's checkpoints) shown on its active layer.
    """
    nodes = []
    for disk in disks:
        for position, layer in enumerate(disk.layers):
            below = disk.layers[position + 1] if position + 1 < len(disk.layers) else None
            node = {
                "node-name": layer.name,
                "drv": layer.format,
                "file": layer.file,
                "ro": disk.read_only or position > 0,
                "image": _image(disk, position),
                "children": [{"child": "backing", "node-name": below.name}] if below else [],
                "dirty-bitmaps": (bitmaps or {}).get(disk.target, []) if position == 0 else [],
            }
            if below is not None:
                node["backing_file"] = below.file
            nodes.append(node)
    return nodes


def _image(disk: Disk, position: int) -> dict:
    layer = disk.layers[position]
    capacity, allocation = disk.sizes.get(layer.file, (0, 0))
    image = {"filename": layer.file, "format": layer.format, "virtual-size": capacity, "actual-size": allocation}
    if position + 1 < len(disk.layers):
        below = disk.layers[position + 1]
        image.update(
            {
                "backing-filename": below.file,
                "full-backing-filename": below.file,
                "backing-filename-format": below.format,
            }
        )
    return image


def find_layer(disks: list[Disk], name: str) -> tuple[Disk, Layer | None] | None:
    """The disk that ``name`` belongs to, and the layer it names (None when it names the whole disk).

    A layer answers to its virsh name (``vda[2]``), its file and its file's basename; a disk to its target
    (``vda``) and alias (``virtio-disk0``).
    """
    for disk in disks:
        if name in (disk.target, disk.alias):
            return disk, None
        for layer in disk.layers:
            if name in (layer.name, layer.file) or name == layer.file.rsplit("/", 1)[-1]:
                return disk, layer
    return None
