r"""``render(chain)``: the backing chain as a ``graphviz.Digraph``, in the seed's convention.

Images go left to right, base first, and each overlay points at its backing
file, ``[A] <-- [B]``.  Running jobs add an arrow in their colour showing
which way data flows, images that left the chain are greyed with the seed's
rule, and ``diff_from=`` highlights what changed since an earlier chain::

    >>> from qblocknb.model.chain import Chain, Image
    >>> a = Image("a.qcow2", "qcow2", 64 << 20, node_name="node-A")
    >>> b = Image("b.qcow2", "qcow2", 64 << 20, node_name="node-B", backing_file="a.qcow2", device="virtio0")
    >>> graph = render(Chain((a, b), device="virtio0"))
    >>> graph.node_attr["shape"], graph.graph_attr["rankdir"]
    ('box', 'LR')
    >>> print(*(line.strip() for line in graph.body if "->" in line), sep="\n")
    n0 -> n1 [color="#2e3436" dir=back id="backing:node-B"]
    n1 -> device [color="#204a87" dir=back id="attached:virtio0" style=dashed]
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import graphviz

from qblocknb.model.chain import Chain, ChainDiff, Image, JobInfo, RetiredImage, display_name
from qblocknb.render import fleecing, rows, style
from qblocknb.render.labels import arrow_label, image_label, job_colour, retired_label, target_label, writers


def svg_id(kind: str, name: str) -> str:
    """The ``id`` an element gets in the SVG, such as ``image:node-A``: stable, for tests and styling."""
    return f"{kind}:{name}"


@dataclass
class _Layout:
    """What one drawing needs to know to place and colour things."""

    chain: Chain
    diff: ChainDiff | None
    ids: dict[str, str] = field(default_factory=dict)  # every name an image is known by -> graph node
    highlight: Collection[str] = ()  # names of images, jobs or the device drawn in the highlight colour

    def learn(self, image: Image) -> str:
        """A fresh graph node for ``image``; plain ids, since graphviz reads ``:`` in a name as a port."""
        node_id = f"n{len(set(self.ids.values()))}"
        for name in image.names:
            self.ids.setdefault(name, node_id)
        return node_id

    def find(self, name: str | None) -> str | None:
        if not name:
            return None
        return self.ids.get(name) or self.ids.get(display_name(name))


def render(
    chain: Chain,
    *,
    diff_from: Chain | None = None,
    show_retired: bool = True,
    title: str | None = None,
    highlight: Collection[str] = (),
) -> graphviz.Digraph:
    """Draw ``chain``; with ``diff_from``, new images and re-pointed arrows are highlighted.

    ``highlight`` names images (any of their names), job ids or the device to draw in the highlight colour,
    thick: what a finding of ``qb.diagnose`` is about.
    """
    graph = graphviz.Digraph(
        "chain", graph_attr=dict(style.GRAPH), node_attr=dict(style.NODE), edge_attr=dict(style.EDGE)
    )
    if title:
        graph.attr(label=title, labelloc="t", fontsize="13")
    layout = _Layout(chain, chain.diff(diff_from) if diff_from is not None else None, highlight=highlight)
    if show_retired:  # drawn first, so that dot places the row under the chain
        _draw_retired(graph, layout, diff_from)
    _draw_images(graph, layout)
    attached = fleecing.draw_filters(graph, layout)
    _draw_device(graph, layout, attached)
    _draw_targets(graph, layout)
    for job in chain.jobs:
        _draw_job(graph, layout, job)
    fleecing.draw_exports(graph, layout)
    return graph


def _draw_images(graph: graphviz.Digraph, layout: _Layout) -> None:
    chain, diff = layout.chain, layout.diff
    added = set(diff.added) if diff else set()
    repointed = {file: old for file, old, _ in diff.repointed} if diff else {}
    for image in chain.images:
        node_id = layout.learn(image)
        is_active = image is chain.active
        tags = []
        if is_active:
            tags.append((f"active layer · {chain.device}" if chain.device else "active layer", style.ACTIVE_BORDER))
        if image.file in added:
            tags.append(("new", style.NEW))
        fill, border, width = style.IMAGE_FILL, style.IMAGE_BORDER, "1"
        if is_active:
            fill, border, width = style.ACTIVE_FILL, style.ACTIVE_BORDER, "2.5"
        if image.file in added:
            fill, border, width = style.NEW_FILL, style.NEW, "2.5"
        names = image.names
        touching = [job for job in chain.jobs if names & {job.source, job.target}]
        if touching and image.file not in added:
            border = style.job_colour(touching[0].type)
        if names & set(layout.highlight):
            border, width = style.HIGHLIGHT, "4"
        graph.node(
            node_id,
            image_label(image, tags),
            id=svg_id("image", image.label),
            fillcolor=fill,
            color=border,
            penwidth=width,
        )
    for position, (below, above) in enumerate(zip(chain.images, chain.images[1:], strict=False), start=1):
        attrs = {"id": svg_id("backing", above.label), "dir": "back", "color": style.INK}
        if rows.starts_row(position):
            attrs["constraint"] = "false"
        if above.file in repointed:
            was = repointed[above.file]
            attrs.update(
                color=style.REPOINTED,
                penwidth="2.5",
                fontcolor=style.REPOINTED,
                label=f"re-pointed (was {display_name(was)})" if was else "re-pointed",
            )
        graph.edge(layout.find(below.file), layout.find(above.file), **attrs)
    rows.wrap(graph, [layout.find(image.file) for image in chain.images])


def _draw_device(graph: graphviz.Digraph, layout: _Layout, attached: str | None = None) -> None:
    """The guest device, to the right of the active layer it reads and writes (through ``attached``, a filter)."""
    chain = layout.chain
    if not chain.device or not chain.images:
        return
    marked = chain.device in layout.highlight
    graph.node(
        "device",
        chain.device,
        id=svg_id("device", chain.device),
        shape="cds",
        fillcolor=style.DEVICE_FILL,
        color=style.HIGHLIGHT if marked else style.ACTIVE_BORDER,
        penwidth="4" if marked else "1",
    )
    graph.edge(
        attached or layout.find(chain.active.file),
        "device",
        id=svg_id("attached", chain.device),
        dir="back",
        style="dashed",
        color=style.ACTIVE_BORDER,
    )


def _draw_targets(graph: graphviz.Digraph, layout: _Layout) -> None:
    """Job targets outside the chain (a mirror's or a backup's destination)."""
    for image in layout.chain.targets:
        if not (layout.find(image.node_name) or layout.find(image.file)):
            _draw_target(graph, layout, image)


def _draw_target(graph: graphviz.Digraph, layout: _Layout, image: Image) -> str:
    """One target, dashed, bordered in the colour of the job writing it; returns its graph node."""
    writing = writers(image, layout.chain.jobs)
    node_id = layout.learn(image)
    graph.node(
        node_id,
        target_label(image, layout.chain.jobs, scratch=fleecing.is_scratch(image, layout.chain)),
        id=svg_id("target", image.label),
        fillcolor=style.TARGET_FILL,
        color=style.job_colour(writing[0].type) if writing else style.MUTED,
        style="rounded,filled,dashed",
    )
    return node_id


LONG_CHAIN = 100  # images; see _draw_job


def _draw_job(graph: graphviz.Digraph, layout: _Layout, job: JobInfo) -> None:
    """An arrow from where the job reads to where it writes, labelled with its id, type, status and progress.

    A job that met an I/O error is drawn in the error colour, its label naming the error (``job0: write error,
    stopped``).
    """
    colour = style.HIGHLIGHT if job.id in layout.highlight else job_colour(job)
    source, target = layout.find(job.source), layout.find(job.target)
    if target is None and job.target:  # a target the chain does not know, such as an NBD export
        target = _draw_target(graph, layout, Image(file=job.target, format="?", virtual_size=0))
    if source is None or target is None:
        return
    outside = layout.chain.find(job.target or "") is None
    # A label on a long non-constraining edge makes dot (2.43) spend seconds and, past ~800 images, crash:
    # on long chains the caption is an external label instead.
    caption = "xlabel" if len(layout.chain) > LONG_CHAIN else "label"
    graph.edge(
        source,
        target,
        id=svg_id("job", job.id),
        **{caption: arrow_label(job)},
        color=colour,
        fontcolor=colour,
        penwidth="2.5",
        style="bold",
        arrowhead="vee",
        constraint="true" if outside else "false",
    )


def _draw_retired(graph: graphviz.Digraph, layout: _Layout, earlier: Chain | None) -> None:
    """Images that left the chain, greyed, in a row of their own under it."""
    chain = layout.chain
    retired = [r for r in chain.retired if chain.find(r.file) is None]
    known = {r.file for r in retired}
    if earlier is not None and layout.diff is not None:
        gone = [earlier.find(f) for f in layout.diff.removed if f not in known]
        retired += [RetiredImage(i.file, i.node_name, "this change", True, "removed") for i in gone if i]
    if not retired:
        return
    with graph.subgraph(name="cluster_retired") as box:
        box.attr(label="left the chain", fontcolor=style.MUTED, color=style.MUTED, style="dashed,rounded")
        previous = None
        for number, image in enumerate(retired):
            node_id = f"r{number}"
            colour = style.MUTED if image.valid else style.INVALID
            box.node(
                node_id,
                retired_label(image, colour),
                id=svg_id("retired", image.node_name or image.name),
                fillcolor=style.RETIRED_FILL,
                color=colour,
                fontcolor=style.MUTED,
                style="rounded,filled,dashed",
            )
            if previous and not rows.starts_row(number):
                box.edge(previous, node_id, style="invis")
            previous = node_id
        rows.wrap(box, [f"r{number}" for number in range(len(retired))])
