"""The moves a plan is made of: one stream, commit or mirror, the chain it leaves and the bytes it copies.

A ``State`` is a chain (as ``predict`` works it out, so plans and previews agree), the byte ranges each image
holds itself, and what became of the images that left.  ``moves(state, goal, job_id)`` lists every move that
brings the chain nearer the goal without losing an image the goal keeps::

    >>> from qblocknb.model.planner import chain_from_notation, parse_goal
    >>> chain = chain_from_notation("[a.qcow2] <-- [b.qcow2] <-- [c.qcow2]")
    >>> state = State.start(chain, {"a.qcow2": [(0, 4 << 20)], "b.qcow2": [(1 << 20, 1 << 20)]})
    >>> [m.shell_line for m in moves(state, parse_goal(chain, "[a.qcow2] <-- [c.qcow2]"), "job0")]
    ['block-stream device=node-C base-node=node-A job-id=job0', \
'block-commit device=node-C base-node=node-A top-node=node-B job-id=job0']

The bytes a move copies are estimated from allocation (``qemu-img map``): a stream copies what the removed
images hold and the top does not, a commit everything the removed images hold, a mirror what it reads.
An image whose layout is unknown counts its allocated size as if it overlapped no other.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from qblocknb.model.chain import Chain, Image
from qblocknb.model.predict import predict
from qblocknb.model.qmpshell import format_json, format_line

Extents = tuple[tuple[int, int], ...]  # sorted, disjoint [start, end) byte ranges
Layout = Sequence[tuple[int, int]] | int  # (offset, length) ranges an image holds itself, or just its byte count
APART = 1 << 80  # where images of unknown layout are laid out, side by side, so that they never overlap
KINDS = ("stream", "mirror (sync=top)", "mirror (sync=full)", "commit", "active commit", "mirror (sync=none)")
PAUSES = {"block-stream": False, "block-commit": False, "drive-mirror": False}  # all run with the guest live


# -- byte ranges ---------------------------------------------------------------------------------
def extents(ranges: Iterable[tuple[int, int]]) -> Extents:
    """``(offset, length)`` ranges as sorted, merged ``(start, end)`` pairs.

    >>> extents([(4, 4), (0, 2), (2, 1)])
    ((0, 3), (4, 8))
    """
    merged: list[tuple[int, int]] = []
    for start, end in sorted((offset, offset + length) for offset, length in ranges if length > 0):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


def union(parts: Iterable[Extents]) -> Extents:
    return extents((start, end - start) for part in parts for start, end in part)


def minus(these: Extents, those: Extents) -> Extents:
    """The ranges of ``these`` that ``those`` do not cover.

    >>> minus(((0, 10),), ((2, 4), (6, 7)))
    ((0, 2), (4, 6), (7, 10))
    """
    left: list[tuple[int, int]] = []
    for start, end in these:
        for cut_start, cut_end in those:
            if cut_end <= start or cut_start >= end:
                continue
            if cut_start > start:
                left.append((start, cut_start))
            start = max(start, cut_end)
        if start < end:
            left.append((start, end))
    return tuple(left)


def size(part: Extents) -> int:
    return sum(end - start for start, end in part)


# -- state -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class State:
    """A chain on the way to the goal, what each of its images holds, and what became of the ones that left."""

    chain: Chain
    held: Mapping[str, Extents]
    invalid_before: frozenset[str] = frozenset()  # images that were invalid before the plan: not its doing

    @classmethod
    def start(cls, chain: Chain, allocation: Mapping[str, Layout] | None = None) -> State:
        """The chain as it is; ``allocation`` maps an image (any of its names) to its ranges or byte count."""
        given = dict(allocation or {})
        held = {}
        for number, image in enumerate(chain.images):
            layout = next((given[name] for name in image.names if name in given), image.allocated_size or 0)
            if isinstance(layout, int):
                layout = [((number + 1) * APART, layout)]
            held[image.file] = extents(layout)
        return cls(chain, held, frozenset(r.file for r in chain.retired if not r.valid))

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(image.file for image in self.chain.images)

    @property
    def invalid(self) -> tuple[str, ...]:
        """The images the plan so far has made invalid (``predict`` applies the seed's rule, carried on)."""
        return tuple(r.file for r in self.chain.retired if not r.valid and r.file not in self.invalid_before)


@dataclass(frozen=True)
class Goal:
    """The images to keep (files of the chain, base first) and the new copy targets on top, in order."""

    keep: tuple[str, ...]
    new: tuple[str, ...]
    node_names: Mapping[str, str]  # new target file -> its node name

    @property
    def files(self) -> tuple[str, ...]:
        return self.keep + self.new


@dataclass(frozen=True)
class Move:
    """One command of a plan, with the chain it leaves and what it costs."""

    command: str
    arguments: dict
    kind: str
    summary: str
    copies: int
    after: State

    def __iter__(self) -> Iterator:
        """A step unpacks as its ``(command, arguments)`` pair."""
        return iter((self.command, self.arguments))

    @property
    def shell_line(self) -> str:
        return format_line(self.command, self.arguments)

    @property
    def json(self) -> str:
        return format_json(self.command, self.arguments)

    @property
    def ready(self) -> bool:
        """True when the job waits at READY for ``block-job-complete`` (active commit, mirror)."""
        return self.kind == "active commit" or self.command == "drive-mirror"

    @property
    def pauses(self) -> bool:
        """True when the guest must be paused for it; none of the live jobs need that."""
        return PAUSES[self.command]

    @property
    def chain(self) -> Chain:
        """The chain once this step is done."""
        return self.after.chain


# -- moves -------------------------------------------------------------------------------------
def moves(state: State, goal: Goal, job_id: str, focus: tuple[int, int] | None = None) -> Iterator[Move]:
    """Every stream, commit or mirror that removes only images the goal drops, or adds its next new image.

    ``focus``, a gap's lowest position and the kept image above it, narrows them to the moves that close that
    gap or commit the gap above that image (the search's canonical order); no mirror then.
    """
    files, wanted = state.files, set(goal.files)
    kept = [position for position, file in enumerate(files) if file in wanted]
    active = len(files) - 1
    for top in kept + ([active] if active not in kept else []):
        below = [position for position in kept if position < top]
        base = below[-1] if below else -1
        if base < top - 1 and top > 0 and (focus is None or top == focus[1]):
            yield _stream(state, top, base, job_id)
    if focus is not None:
        kept = [base for base in kept if base in (focus[0] - 1, focus[1])]
    placed = [file for file in files if file in goal.new]
    pending = len(placed) < len(goal.new)
    for base in kept:  # a commit takes a whole gap (taking it in parts copies more), or leaves the active
        top = base + 1  # layer for a mirror to replace
        if top == len(files) or files[top] in wanted:
            continue  # no gap above this base: a commit would drop the kept image there
        while top + 1 < len(files) and files[top + 1] not in wanted:
            top += 1
        yield _commit(state, top, base, job_id)
        if top == active and top - 1 > base and pending:
            yield _commit(state, top - 1, base, job_id)
    if pending and focus is None:
        target = goal.new[len(placed)]
        node = goal.node_names[target]
        if not kept:
            yield _mirror(state, "full", target, node, job_id)
        if active not in kept and active > 0:
            yield _mirror(state, "top", target, node, job_id)
        yield _mirror(state, "none", target, node, job_id)


def node_of(image: Image) -> str:
    """How a command names an image: its node name, automatic ones (``#block123``) too; else its file."""
    return image.node_name or image.name


def _names(images: Iterable[Image]) -> str:
    return ", ".join(image.name for image in images)


def _stream(state: State, top: int, base: int, job_id: str) -> Move:
    images = state.chain.images
    arguments = {"device": node_of(images[top])} | ({"base-node": node_of(images[base])} if base >= 0 else {})
    leaving = images[base + 1 : top]
    data = union(state.held[image.file] for image in leaving)
    copies = size(minus(data, state.held[images[top].file]))
    held = {**state.held, images[top].file: union([state.held[images[top].file], data])}
    rest = f"then backs onto {images[base].name}" if base >= 0 else "then stands alone"
    summary = f"stream {_names(leaving)} into {images[top].name}, which {rest}"
    return _move(state, "block-stream", arguments | {"job-id": job_id}, "stream", summary, copies, held)


def _commit(state: State, top: int, base: int, job_id: str) -> Move:
    images = state.chain.images
    arguments = {
        "device": node_of(state.chain.active),
        "base-node": node_of(images[base]),
        "top-node": node_of(images[top]),
    }
    data = union(state.held[image.file] for image in images[base + 1 : top + 1])
    held = {**state.held, images[base].file: union([state.held[images[base].file], data])}
    active = top == len(images) - 1
    summary = f"commit {_names(images[base + 1 : top + 1])} into {images[base].name}" + (
        f", READY, then block-job-complete makes {images[base].name} the active layer" if active else ""
    )
    kind = "active commit" if active else "commit"
    return _move(state, "block-commit", arguments | {"job-id": job_id}, kind, summary, size(data), held)


def _mirror(state: State, sync: str, target: str, node: str, job_id: str) -> Move:
    chain = state.chain
    arguments = {"device": node_of(chain.active), "target": target, "format": "qcow2", "sync": sync}
    arguments |= {"node-name": node, "job-id": job_id}
    if sync == "full":
        data, what = union(state.held.values()), f"mirror the whole chain onto new {target}"
    elif sync == "top":
        data = state.held[chain.active.file]
        what = f"mirror {chain.active.name} onto new {target}, which backs onto {chain.images[-2].name}"
    else:
        data, what = (), f"start new {target} as an overlay of {chain.active.name}"
    summary = f"{what} (sync={sync}), READY, then block-job-complete pivots the device to it"
    held = {**state.held, target: data}
    return _move(state, "drive-mirror", arguments, f"mirror (sync={sync})", summary, size(data), held)


def _move(
    state: State, command: str, arguments: dict, kind: str, summary: str, copies: int, held: dict[str, Extents]
) -> Move:
    """The move, its chain predicted by ``predict``: the seed's rule on images that leave, and a commit's write
    into its base ending the validity of what was streamed out above it."""
    after = predict(state.chain, command, arguments).after
    held = {file: part for file, part in held.items() if file in after.files}
    return Move(command, arguments, kind, summary, copies, replace(state, chain=after, held=held))
