"""Plans: from a chain and a goal chain, the cheapest sequence of stream, commit and mirror that gets there.

The goal is written in the seed's notation and keeps some of the chain's images in their order; new images
on top of it are copy targets that a mirror creates.  Every way of getting there is tried, and the plan
kept is the one that needs the guest paused least (none of these jobs does), then copies the fewest bytes,
then leaves the fewest images invalid (the seed's rule: a streamed-out image stays a point in time, a
committed one does not), then takes the fewest steps::

    >>> chain = chain_from_notation("[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]")
    >>> plan = make_plan(chain, "[a.qcow2] <-- [d.qcow2]")
    >>> [step.shell_line for step in plan.steps]
    ['block-stream device=node-D base-node=node-A job-id=job0']
    >>> [([step.shell_line for step in alternative.steps], alternative.reason) for alternative in plan.alternatives]
    [(['block-commit device=node-D base-node=node-A top-node=node-C job-id=job0'], \
'it leaves b.qcow2, c.qcow2 invalid, where the chosen plan leaves none invalid')]
    >>> make_plan(chain, "[d.qcow2] <-- [a.qcow2]")
    Traceback (most recent call last):
    ...
    qblocknb.errors.InputError: goal [d.qcow2] <-- [a.qcow2] puts d.qcow2 below a.qcow2: jobs never reorder \
a chain, and in [a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2] a.qcow2 is older; keep the chain's order.

Nothing here talks to QEMU: ``qblocknb.live.plan`` reads a Machine's chain and allocation, and runs plans.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import PurePath

from qblocknb.errors import InputError
from qblocknb.model import plansearch
from qblocknb.model.chain import Chain, Image
from qblocknb.model.planmoves import KINDS, Goal, Layout, Move, State
from qblocknb.model.sizes import human_size
from qblocknb.model.virsh import virsh_line

MAX_ALTERNATIVES = 6
CRITERIA = ("pauses", "bytes", "invalid", "steps")  # what plans are compared by, in this order
_BRACKETED = re.compile(r"^\[([^\[\]]+)\]$")
_EXAMPLE = "write images base first, each in brackets, joined by <--, such as [a.qcow2] <-- [d.qcow2]"


# -- the goal ----------------------------------------------------------------------------------
def parse_notation(text: str) -> list[str]:
    """Image names from the seed's notation, base first.

    >>> parse_notation("[a.qcow2] <-- [d.qcow2]")
    ['a.qcow2', 'd.qcow2']
    """
    if not text.strip():
        raise InputError("the goal is empty", "a chain needs at least one image", _EXAMPLE)
    names = []
    for part in text.split("<--"):
        match = _BRACKETED.match(part.strip())
        if not match or not match.group(1).strip():
            why = f"{part.strip()!r} is not [name]"
            raise InputError(f"goal {text!r} is not in the seed's notation", why, _EXAMPLE)
        names.append(match.group(1).strip())
    return names


def chain_from_notation(text: str) -> Chain:
    """A chain on paper, its images named the seed's way (``a.qcow2`` is ``node-A``), for planning ahead."""
    images: list[Image] = []
    for name in parse_notation(text):
        backing = images[-1].file if images else None
        images.append(Image(name, "qcow2", 0, node_name=f"node-{PurePath(name).stem.upper()}", backing_file=backing))
    return Chain(tuple(images))


def parse_goal(chain: Chain, goal: str | Chain | Sequence[str]) -> Goal:
    """The goal checked against the chain; an InputError names what makes it impossible."""
    if not chain.images:
        raise InputError("cannot plan on an empty chain", "there is no image to work on", "launch QEMU on an image")
    names = parse_notation(goal) if isinstance(goal, str) else [getattr(item, "name", item) for item in goal]
    shown = " <-- ".join(f"[{name}]" for name in names)
    if not names:
        raise InputError("the goal is empty", "a chain needs at least one image", _EXAMPLE)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"goal {shown} names {', '.join(repeated)} twice", "an image is in a chain once", _EXAMPLE)
    keep: list[Image] = []
    new: list[str] = []
    for name in names:
        image = chain.find(name) or _by_stem(chain, name)
        if image is None:
            new.append(_new_target(chain, shown, name))
            continue
        if new:
            raise InputError(
                f"goal {shown} puts {image.name} above the new image {new[0]}",
                "a job can add a new image only on top of the chain, by a mirror",
                "put new copy targets last",
            )
        if keep and chain.images.index(image) < chain.images.index(keep[-1]):
            raise InputError(
                f"goal {shown} puts {keep[-1].name} below {image.name}",
                f"jobs never reorder a chain, and in {chain} {image.name} is older",
                "keep the chain's order",
            )
        keep.append(image)
    return Goal(tuple(image.file for image in keep), tuple(new), _node_names(chain, new))


def _by_stem(chain: Chain, name: str) -> Image | None:
    """The one image whose file name without its extension is ``name`` (``i00`` for ``i00.qcow2``), if one."""
    matches = [image for image in chain.images if PurePath(image.file).stem == name]
    return matches[0] if len(matches) == 1 else None


def _new_target(chain: Chain, shown: str, name: str) -> str:
    """``name`` as a new copy target, or the reason it cannot be one."""
    retired = next((r for r in chain.retired if name in (r.file, r.name, r.node_name)), None)
    if retired is not None:
        raise InputError(
            f"goal {shown} names {retired.name}, which left the chain ({retired.note})",
            "no job brings an image back into a chain",
            "leave it out, or name a new file to copy the chain to",
        )
    if name in chain.known_node_names or any(name in image.names for image in chain.other_nodes):
        raise InputError(
            f"goal {shown} names {name}, which QEMU has open outside the chain",
            "a plan only keeps, drops or newly creates images",
            "leave it out, or name a new file to copy the chain to",
        )
    if not PurePath(name).suffix:
        raise InputError(
            f"goal {shown} names {name}, which the chain {chain} never had",
            "an image that is not in the chain can only be a new file a mirror creates",
            "name it as a file, such as e.qcow2, or pick from the chain",
        )
    return name


def _node_names(chain: Chain, new: list[str]) -> dict[str, str]:
    """A node name for each new target, the seed's way (``e.qcow2`` is ``node-E``), unused in QEMU."""
    taken = set(chain.known_node_names)
    names = {}
    for file in new:
        base = candidate = f"node-{PurePath(file).stem.upper()}"
        number = 1
        while candidate in taken:
            number += 1
            candidate = f"{base}{number}"
        taken.add(candidate)
        names[file] = candidate
    return names


# -- costs and routes --------------------------------------------------------------------------
@dataclass(frozen=True)
class Cost:
    """What a plan costs, in the order plans are compared: pauses, bytes, images left invalid, steps."""

    pauses: int
    bytes: int
    invalid: tuple[str, ...]
    steps: int
    bytes_known: bool = True  # False for a chain with no sizes (notation alone): bytes do not rank plans then

    def key(self, criteria: Sequence[str] = CRITERIA) -> tuple[int, ...]:
        """The counts of ``criteria``, in that order."""
        counts = {"pauses": self.pauses, "bytes": self.bytes, "invalid": len(self.invalid), "steps": self.steps}
        counts["bytes"] = counts["bytes"] if self.bytes_known else 0
        return tuple(counts[criterion] for criterion in criteria)

    def __str__(self) -> str:
        left = f"leaves {', '.join(self.invalid)} invalid" if self.invalid else "leaves no image invalid"
        guest = f"pauses the guest {self.pauses} times" if self.pauses else "the guest keeps running"
        steps = f"{self.steps} step" + ("" if self.steps == 1 else "s")
        copies = f"about {human_size(self.bytes)}" if self.bytes_known else "an unknown number of bytes"
        return f"copies {copies} in {steps}; {left}; {guest}"


@dataclass(frozen=True)
class Route:
    """A sequence of moves from the start chain to the goal."""

    start: Chain
    steps: tuple[Move, ...]
    bytes_known: bool = True

    @property
    def chains(self) -> tuple[Chain, ...]:
        """The start chain, then the chain after each step."""
        return (self.start, *(step.chain for step in self.steps))

    @cached_property
    def cost(self) -> Cost:
        last = self.steps[-1].after if self.steps else None
        invalid = tuple(Image(file, "", 0).name for file in last.invalid) if last else ()
        pauses = sum(step.pauses for step in self.steps)
        copies = sum(step.copies for step in self.steps)
        return Cost(pauses, copies, invalid, len(self.steps), self.bytes_known)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(step.kind for step in self.steps)

    def order(self, criteria: Sequence[str] = CRITERIA) -> tuple:
        """How routes are ranked: by cost, then streams before mirrors before commits, then by their lines."""
        kinds = tuple(KINDS.index(kind) for kind in self.kinds)
        return (self.cost.key(criteria), kinds, [s.shell_line for s in self.steps])


class _Routed:
    """What a plan and an alternative show of their route."""

    route: Route

    @property
    def start(self) -> Chain:
        return self.route.start

    @property
    def steps(self) -> tuple[Move, ...]:
        """Each command in order: ``.command``, ``.arguments``, ``.shell_line``, ``.json``, ``.chain`` after it."""
        return self.route.steps

    @property
    def chains(self) -> tuple[Chain, ...]:
        return self.route.chains

    @property
    def cost(self) -> Cost:
        return self.route.cost

    def virsh_lines(self, domain: str = "DOM", disk: str = "vda") -> tuple[str, ...]:
        """Each step as virsh says it, on the chain before that step."""
        return tuple(
            virsh_line(s.command, s.arguments, c, domain, disk) for s, c in zip(self.steps, self.chains, strict=False)
        )


@dataclass(frozen=True)
class Alternative(_Routed):
    """A route that reaches the goal too, and why the plan does not take it."""

    route: Route
    reason: str


@dataclass(frozen=True)
class Plan(_Routed):
    """The route chosen to the goal, with the alternatives rejected; ``plan.run(vm)`` runs it."""

    goal: str
    route: Route
    alternatives: tuple[Alternative, ...]
    virsh_names: tuple[str, str] = ("DOM", "vda")  # the domain and disk its virsh lines name
    limited: bool = False  # the search stopped at its budget: the plan is the best found, not proven cheapest

    @property
    def exact(self) -> bool:
        """True when the plan is proven the cheapest (the search was not stopped at its budget)."""
        return not self.limited

    @property
    def bytes_known(self) -> bool:
        """False when the chain came with no sizes, so that bytes copied could not rank the plans."""
        return self.cost.bytes_known

    def __repr__(self) -> str:
        return f"<Plan {self.start} -> {self.goal}: {len(self.steps)} steps>"

    def __str__(self) -> str:
        lines = [f"{self.start}  ->  {self.goal}", f"  {self.cost}"]
        if self.limited:
            lines.append(
                f"  the search stopped at its limit of {plansearch.SEARCH_BUDGET:,} states: "
                "this is the best plan it found, not proven the cheapest"
            )
        for number, (step, virsh) in enumerate(zip(self.steps, self.virsh_lines(*self.virsh_names), strict=True), 1):
            lines += [f"  {number}. {step.shell_line}", f"     {virsh}", f"     {step.summary}  ->  {step.chain}"]
        lines += ["rejected:"] if self.alternatives else []
        for alternative in self.alternatives:
            lines.append(f"  - {'; '.join(s.shell_line for s in alternative.steps)}: {alternative.reason}")
        return "\n".join(lines)


# -- planning ----------------------------------------------------------------------------------
def make_plan(
    chain: Chain,
    goal: str | Chain | Sequence[str],
    allocation: Mapping[str, Layout] | None = None,
    taken_job_ids: set[str] | frozenset[str] = frozenset(),
    prefer: str | Sequence[str] = (),
) -> Plan:
    """The plan from ``chain`` to ``goal``; ``allocation`` maps images to the ranges (or bytes) they hold.

    ``prefer`` names criteria to compare first, such as ``("invalid",)`` to keep points in time at the
    price of copying more; the others follow in the usual order (CRITERIA).
    """
    criteria = _criteria(prefer)
    wanted = parse_goal(chain, goal)
    start = State.start(chain, allocation)
    known = _bytes_known(chain, allocation)
    job_ids = _job_ids(taken_job_ids, len(chain.images) + len(wanted.new) + 1)
    found = plansearch.search(start, wanted, job_ids, criteria, known)
    routes = sorted((Route(chain, made, known) for made in found.routes), key=lambda route: route.order(criteria))
    shown = " <-- ".join(f"[{Image(file, '', 0).name}]" for file in wanted.files)
    if not routes and found.limited:
        raise InputError(
            f"the search for a plan from {chain} to {shown} stopped at its limit of "
            f"{plansearch.SEARCH_BUDGET:,} states",
            "it found no route to the goal before that",
            "plan in parts, keeping more images in a first goal",
        )
    if not routes:
        raise InputError(
            f"no sequence of stream, commit and mirror turns {chain} into {shown}",
            "every way tried either drops an image the goal keeps or never reaches it",
            "keep the active layer's data: drop images, or add new copy targets on top",
        )
    chosen = routes[0]
    alternatives = [
        Alternative(route, why_not(route.cost, chosen.cost, criteria)) for route in _rejected(routes, criteria)
    ]
    return Plan(shown, chosen, tuple(alternatives), limited=found.limited)


def _bytes_known(chain: Chain, allocation: Mapping[str, Layout] | None) -> bool:
    """Whether anything says how much the images hold: an allocation, or a size on any image."""
    return bool(allocation) or any(image.allocated_size for image in chain.images)


def _criteria(prefer: str | Sequence[str]) -> tuple[str, ...]:
    """The criteria in the order plans are compared: the preferred ones first."""
    first = (prefer,) if isinstance(prefer, str) else tuple(prefer)
    unknown = [name for name in first if name not in CRITERIA]
    if unknown:
        raise InputError(
            f"prefer= names {', '.join(map(repr, unknown))}, which is no criterion",
            f"plans are compared by {', '.join(CRITERIA)}",
            "pass some of those, such as prefer=('invalid',)",
        )
    return (*first, *(name for name in CRITERIA if name not in first))


def _rejected(routes: list[Route], criteria: tuple[str, ...]) -> list[Route]:
    """A few rejected routes that say different things: for each criterion on which routes lose, the best
    route of each kind of step mix, taken in turns across the criteria, then in the order they rank."""
    chosen = routes[0]
    groups: dict[tuple, Route] = {(frozenset(chosen.kinds), None): chosen}
    for route in routes[1:]:
        groups.setdefault((frozenset(route.kinds), deciding(route.cost, chosen.cost, criteria)), route)
    by_criterion: dict[str | None, list[Route]] = {}
    for (_kinds, criterion), route in list(groups.items())[1:]:
        by_criterion.setdefault(criterion, []).append(route)
    picked: list[Route] = []
    while len(picked) < MAX_ALTERNATIVES and any(by_criterion.values()):
        for routes_losing in by_criterion.values():
            if routes_losing and len(picked) < MAX_ALTERNATIVES:
                picked.append(routes_losing.pop(0))
    return sorted(picked, key=lambda route: route.order(criteria))


def _job_ids(taken: set[str] | frozenset[str], count: int) -> list[str]:
    """``count`` ``jobN`` ids (one per step of the longest plan), skipping the ones in use."""
    free = (f"job{number}" for number in itertools.count() if f"job{number}" not in taken)
    return [next(free) for _ in range(count)]


def deciding(rejected: Cost, chosen: Cost, criteria: Sequence[str] = CRITERIA) -> str | None:
    """The first of ``criteria`` on which ``rejected`` differs from ``chosen``; None when they cost the same."""
    return next((c for c in criteria if rejected.key((c,)) != chosen.key((c,))), None)


def why_not(rejected: Cost, chosen: Cost, criteria: Sequence[str] = CRITERIA) -> str:
    """One sentence: the first count, in the order plans are compared, on which ``rejected`` loses."""
    criterion = deciding(rejected, chosen, criteria)
    if criterion == "pauses":
        return f"it pauses the guest {rejected.pauses} times, where the chosen plan keeps it running"
    if criterion == "bytes":
        return f"it copies about {human_size(rejected.bytes)}, where the chosen plan copies {human_size(chosen.bytes)}"
    if criterion == "invalid":
        return (
            f"it leaves {', '.join(rejected.invalid)} invalid, where the chosen plan leaves "
            f"{', '.join(chosen.invalid) or 'none'} invalid"
        )
    if criterion == "steps":
        return f"it takes {rejected.steps} steps, where {chosen.steps} do"
    return "it costs the same on every count; streams come before mirrors, and mirrors before commits"
