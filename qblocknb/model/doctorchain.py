"""The doctor's checks on chains: image headers, retired images, depth, and libvirt's picture of each disk.

QEMU reads a chain through the files it opened; a restart, ``qemu-img`` or another host reads it through the
names written in the headers, and libvirt boots what its XML says. When those disagree, the next start boots
another disk than the one the guest writes to now::

    >>> h = Header("/v/b.qcow2", "node-B", "node-B", "a.qcow2", None, "/v/a.qcow2", True, True, "/v/a.qcow2")
    >>> [(f.severity, f.subject, str(f.fix)) for f in chain_findings(Observed(headers=(h,)))]
    [('warning', 'b.qcow2', 'change-backing-file device=node-B image-node-name=node-B backing-file=a.qcow2')]
"""

from __future__ import annotations

from qblocknb.model.chain import Chain, RetiredImage, display_name
from qblocknb.model.doctor import Finding, Fix, Header, LibvirtView, Observed
from qblocknb.model.domainxml import Disk


def chain_findings(seen: Observed) -> list[Finding]:
    """Header hazards, invalid retired images still on disk, deep chains, and libvirt's stale XML."""
    found = [finding for header in seen.headers for finding in _header(header)]
    found += [_retired(image) for image in seen.retired_on_disk if not image.valid]
    found += [_deep(chain, seen.depth) for chain in seen.chains if len(chain) > seen.depth]
    if seen.libvirt is not None:
        found += _libvirt(seen.libvirt, seen.chains)
    return found


def _change_backing(header: Header, name: str) -> Fix | None:
    if header.node is None or header.root is None:
        return None
    arguments = {"device": header.root, "image-node-name": header.node, "backing-file": name}
    return Fix(f"write {name} into the header (with the format QEMU opened)", (("change-backing-file", arguments),))


def _header(header: Header) -> list[Finding]:
    image, opened = display_name(header.file), header.open_backing
    restart = "a restart, qemu-img and any other reader go by the header"
    wrong = None
    if header.backing is None and opened:
        wrong = f"the header of {image} names no backing file, but QEMU reads it over {display_name(opened)}"
    elif header.backing is not None and not header.exists:
        wrong = (
            f"the header of {image} names its backing file '{header.backing}', which does not resolve from "
            f"the image's folder ({header.resolves_to} does not exist); QEMU has {opened} open"
        )
    elif header.backing is not None and opened and not header.same_as_open:
        wrong = (
            f"the header of {image} names its backing file '{header.backing}' ({header.resolves_to}), but QEMU "
            f"has {opened} open below it"
        )
    if wrong:
        return [
            Finding(
                "error",
                "image",
                image,
                wrong,
                f"{restart}: they would open {image} over another image or fail to open it",
                "write the file QEMU has open into the header (change-backing-file)",
                _change_backing(header, opened) if opened else None,
                header.node,
            )
        ]
    if header.backing is not None and not header.backing_format:
        return [
            Finding(
                "warning",
                "image",
                image,
                f"the header of {image} names its backing file '{header.backing}' without its format",
                "a reader must then probe the format, which QEMU refuses for raw backing files (and must not "
                "trust: a guest could write a qcow2 header into a raw disk)",
                "write the format into the header (change-backing-file writes the one QEMU opened)",
                _change_backing(header, header.backing),
                header.node,
            )
        ]
    return []


def _retired(image: RetiredImage) -> Finding:
    return Finding(
        "warning",
        "image",
        image.name,
        f"{image.name} left the chain after a {image.left_by} and is invalid, but its file is still there "
        "(this connection saw it leave; jobs of other clients are not known here)",
        f"{image.note}: its data no longer makes a point in time, and opening it later would show a corrupt disk",
        f"delete {image.file} (or keep it away from the valid images)",
        None,
        image.node_name,
    )


def _deep(chain: Chain, depth: int) -> Finding:
    disk = chain.device or "the disk"
    goal = f"[{chain.base.name}] <-- [{chain.active.name}]"
    return Finding(
        "warning",
        "disk",
        disk,
        f"the chain of {disk} is {len(chain)} images deep (more than {depth})",
        "every read that misses the upper layers walks down the chain, and each layer costs memory and file "
        "handles; long chains also make jobs and restarts slower",
        f"flatten it: stream the layers between {chain.base.name} and {chain.active.name} into the active layer",
        Fix(f"flatten to {goal}", goal=goal),
        chain.active.node_name,
    )


def _libvirt(view: LibvirtView, chains: tuple[Chain, ...]) -> list[Finding]:
    """Where libvirt's live XML (beside a passthrough) or its definition differs from the chain QEMU runs."""
    found = []
    for disk in view.live:
        chain = next((c for c in chains if c.device in (disk.alias, disk.target)), None)
        if chain is None:
            continue
        running = [image.file for image in reversed(chain.images)]
        booted = _booted(view, disk)
        stale_live = [layer.file for layer in disk.layers] != running  # never, where the chain is read from it
        stale_boot = booted is not None and booted.active.file != running[0]
        if stale_live or stale_boot:
            found.append(_stale(view, disk, booted, chain, stale_live))
    return found


def _booted(view: LibvirtView, disk: Disk) -> Disk | None:
    """The disk as the persistent definition has it (what a restart boots); None for a transient domain."""
    if view.inactive is None:
        return None
    return next((d for d in view.inactive if d.target == disk.target), None)


def _stale(view: LibvirtView, disk: Disk, booted: Disk | None, chain: Chain, stale_live: bool) -> Finding:
    xml = " <-- ".join(f"[{display_name(layer.file)}]" for layer in reversed(disk.layers))
    boots = booted.active.file if booted is not None else None
    restart = (
        f"a restart boots {display_name(boots)}, not {chain.active.name}, and loses every write the guest made since"
        if boots is not None and boots != chain.active.file
        else "libvirt's later jobs, migration and security labels work from the XML"
    )
    problem = (
        f"libvirt's XML has {disk.target} as {xml} while QEMU runs {chain}"
        if stale_live
        else f"the domain's definition boots {disk.target} from {display_name(boots or '?')} while QEMU runs {chain}"
    )
    known = [layer.file for layer in reversed(disk.layers)]
    fix = None
    if known and [image.file for image in chain.images[: len(known)]] == known:  # QEMU added layers on top
        goal = " <-- ".join(f"[{display_name(file)}]" for file in known)
        fix = Fix(f"commit the layers libvirt does not know into {display_name(known[-1])}", goal=goal)
    return Finding(
        "error",
        "disk",
        disk.target,
        problem,
        f"{restart} (the chain was changed behind libvirt's back, through the monitor passthrough)",
        "change chains with libvirt's own API (qb.connect_libvirt without passthrough=True); to make both agree "
        "now, bring QEMU's chain back to what libvirt knows",
        fix,
        chain.active.node_name,
    )
