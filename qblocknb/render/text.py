"""The chain as text, for terminals and for notebooks without graphviz's ``dot``.

>>> from qblocknb.model.chain import Chain, Image, JobInfo
>>> a = Image("a.qcow2", "qcow2", 64 << 20, 4 << 20, node_name="node-A")
>>> b = Image("b.qcow2", "qcow2", 64 << 20, 1 << 20, node_name="node-B", backing_file="a.qcow2")
>>> chain = Chain((a, b), device="virtio0", jobs=(JobInfo("job0", "stream", "running", 1, 4, "node-A", "node-B"),))
>>> print(text(chain))
[a.qcow2] <-- [b.qcow2]
  a.qcow2  node-A · qcow2  64 MiB virtual · 4 MiB allocated
  b.qcow2  node-B · qcow2  64 MiB virtual · 1 MiB allocated  (active layer · virtio0)
jobs:
  job0 · stream · running · 25%  node-A → node-B
"""

from __future__ import annotations

from qblocknb.model.chain import Chain
from qblocknb.render.labels import (
    bitmap_text,
    details_text,
    flow_text,
    job_caption,
    sizes_known,
    sizes_text,
    target_text,
    writers,
)


def text(chain: Chain, *, diff_from: Chain | None = None, show_retired: bool = True, title: str | None = None) -> str:
    """Seed notation, then one line per image, job and retired image; ``+``/``~`` mark changes since ``diff_from``."""
    diff = chain.diff(diff_from) if diff_from is not None else None
    added = set(diff.added) if diff else set()
    repointed = {file for file, _, _ in diff.repointed} if diff else set()
    lines = [title] if title else []
    lines.append(str(chain))
    width = max((len(image.name) for image in chain.images), default=0)
    for image in chain.images:
        mark = "+" if image.file in added else "~" if image.file in repointed else " "
        extras = []
        if image is chain.active:
            extras.append(f"active layer · {chain.device}" if chain.device else "active layer")
        extras += [f"bitmap {bitmap_text(b)}" for b in image.bitmaps]
        line = f" {mark}{image.name:<{width}}  {details_text(image)}  {sizes_text(image)}"
        lines.append(line + (f"  ({'; '.join(extras)})" if extras else ""))
    if chain.targets:
        lines.append("outside the chain:")
        for target in chain.targets:
            writing = writers(target, chain.jobs)
            said = [sizes_text(target)] if sizes_known(target) or not writing else []
            parts = (target.name, details_text(target), "; ".join(said + [target_text(job) for job in writing]))
            lines.append("  " + "  ".join(part for part in parts if part))
    lines += _fleecing_lines(chain)
    if chain.jobs:
        lines.append("jobs:")
        lines += [f"  {job_caption(job)}  {flow_text(job)}" for job in chain.jobs]
    if show_retired and chain.retired:
        lines.append("left the chain:")
        lines += [f"  {r.name} ({r.node_name or 'no node'}) after {r.left_by}: {r.note}" for r in chain.retired]
    return "\n".join(line.rstrip() for line in lines)


def _fleecing_lines(chain: Chain) -> list[str]:
    """The filters over the active layer (a pull backup's copy-before-write) and the exports, when there are any."""
    lines = ["filters over the active layer:"] if chain.filters else []
    for node in chain.filters:
        parts = [node.node_name, node.driver] + [f"reads {node.child}"] * bool(node.child)
        lines.append("  " + "  ".join(parts + [f"target {node.target}"] * bool(node.target)))
    lines += ["exports:"] if chain.exports else []
    for export in chain.exports:
        where = export.uri or "address not reported by QEMU"
        lines.append(f"  {export.id}  {export.type} of {export.node_name}  {where}")
    return lines
