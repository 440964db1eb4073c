"""The planner's search: a uniform-cost (Dijkstra) search over chain states, each state expanded once.

A route's cost is a vector (pauses, bytes, images left invalid, steps) compared in the planner's order; every
move adds a non-negative amount to each count (invalid images never become valid again), so the first route
to reach a state in that order is the cheapest one there.  A state is keyed by what the cost of any later
move depends on, and by nothing else: the chain's files, the byte ranges of the images a later move can still
copy from or into, and, for each image left valid, which of the images it reads through a later commit can
still write into.  Routes are kept per state and per mix of step kinds, so that the plan can show rejected
routes that say different things.

Two passes, both exact.  Every order of moves is searched first, up to ``FREE_BUDGET`` states; beyond that
(chains of a dozen images with many gaps) the search takes moves in a canonical order, gap by gap from the
bottom: close the lowest gap, optionally committing the gap just above its top first.  Commits copy the same
bytes in any order, a stream copies least once the commit above its top is done, and a commit after a stream
below it can only make the streamed-out images invalid; so some cheapest route is always in that order, and
the search over it grows with the number of gaps, not with their orders (the tests compare both passes with
an exhaustive search on random chains).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from qblocknb.model.planmoves import KINDS, Goal, Move, State, moves

FREE_GAPS = 3  # chains with at most this many gaps are searched in every order of moves
SEARCH_BUDGET = 100_000  # labels expanded before the search stops and says so
GREEDY_TRIES = 20  # labels a stopped search tries to complete, cheapest move first

Key = tuple


@dataclass(frozen=True)
class Found:
    """Routes that reach the goal (as move tuples), and whether the search stopped at its budget."""

    routes: tuple[tuple[Move, ...], ...]
    limited: bool
    expanded: int
    canonical: bool


@dataclass(order=True)
class _Label:
    priority: tuple
    made: tuple[Move, ...] = field(compare=False)
    state: State = field(compare=False)


def state_key(state: State, goal: Goal) -> Key:
    """What the cost of every later move depends on: two states with one key have the same routes onward."""
    files, wanted = state.files, set(goal.files)
    held = tuple(
        state.held[file] if file not in wanted or (number > 0 and files[number - 1] not in wanted) else None
        for number, file in enumerate(files)
    )
    targets = {file for number, file in enumerate(files[:-1]) if file in wanted and files[number + 1] not in wanted}
    exposed = (tuple(sorted(targets.intersection(r.reads_through))) for r in state.chain.retired if r.valid)
    return files, held, tuple(sorted(reads for reads in exposed if reads))


def canonical_moves(state: State, goal: Goal, job_id: str) -> Iterator[Move]:
    """The moves of the canonical order: those that close the lowest gap, or commit the gap above its top.

    Once the lowest gap reaches the active layer (or no gap is left), every move is allowed.
    """
    return moves(state, goal, job_id, _lowest_gap(state.files, set(goal.files)))


def _lowest_gap(files: tuple[str, ...], wanted: set[str]) -> tuple[int, int] | None:
    """The lowest gap's first position and the position of the kept image above it; None if it reaches the top."""
    low = next((number for number, file in enumerate(files) if file not in wanted), None)
    if low is None:
        return None
    top = next((number for number in range(low, len(files)) if files[number] in wanted), None)
    return None if top is None else (low, top)


def gaps(files: tuple[str, ...], wanted: set[str]) -> int:
    """How many runs of images the goal drops the chain has."""
    return sum(
        1 for number, file in enumerate(files) if file not in wanted and (number == 0 or files[number - 1] in wanted)
    )


def search(
    start: State,
    goal: Goal,
    job_ids: Sequence[str],
    criteria: Sequence[str],
    bytes_known: bool = True,
    canonical: bool | None = None,
) -> Found:
    """The routes to the goal: in every order of moves when there are few gaps (more routes to show as
    rejected), else in the canonical order; ``canonical`` forces one or the other."""
    if canonical is None:
        canonical = gaps(start.files, set(goal.files)) > FREE_GAPS
    expand = canonical_moves if canonical else moves
    return _search(start, goal, job_ids, criteria, expand, SEARCH_BUDGET, bytes_known, canonical)


def _search(
    start: State,
    goal: Goal,
    job_ids: Sequence[str],
    criteria: Sequence[str],
    expand: Callable[[State, Goal, str], Iterator[Move]],
    budget: int,
    bytes_known: bool,
    canonical: bool = False,
) -> Found:
    """Dijkstra over (state, mix of step kinds): each label is expanded once, cheapest first."""
    counter = itertools.count()
    heap = [_Label(_priority((), start, criteria, bytes_known, next(counter)), (), start)]
    done: set[tuple] = set()
    routes: list[tuple[Move, ...]] = []
    expanded = 0
    while heap:
        label = heapq.heappop(heap)
        if label.state.files == goal.files:
            routes.append(label.made)
            continue
        mix = frozenset(move.kind for move in label.made) if not canonical else None
        seen = (state_key(label.state, goal), mix)
        if seen in done:
            continue
        if expanded == budget:
            return Found(
                tuple(routes) or _greedy([label, *heap], goal, job_ids, criteria, expand), True, expanded, canonical
            )
        done.add(seen)
        expanded += 1
        if len(label.made) == len(job_ids):
            continue
        for move in expand(label.state, goal, job_ids[len(label.made)]):
            made = (*label.made, move)
            heapq.heappush(
                heap, _Label(_priority(made, move.after, criteria, bytes_known, next(counter)), made, move.after)
            )
    return Found(tuple(routes), False, expanded, canonical)


def _greedy(
    labels: list[_Label],
    goal: Goal,
    job_ids: Sequence[str],
    criteria: Sequence[str],
    expand: Callable[[State, Goal, str], Iterator[Move]],
) -> tuple[tuple[Move, ...], ...]:
    """A route for a search stopped at its budget: from the cheapest labels left, the cheapest next move each
    time until the goal; a route, not a proven cheapest one (the plan says so)."""
    for label in sorted(labels)[:GREEDY_TRIES]:
        made, state = label.made, label.state
        while state.files != goal.files and len(made) < len(job_ids):
            options = [(*made, move) for move in expand(state, goal, job_ids[len(made)])]
            if not options:
                break
            made = min(options, key=lambda route: _priority(route, route[-1].after, criteria, True, 0))
            state = made[-1].after
        if state.files == goal.files:
            return (made,)
    return ()


def _priority(made: tuple[Move, ...], state: State, criteria: Sequence[str], bytes_known: bool, tie: int) -> tuple:
    """How labels are ranked: the cost so far in the planner's order, then its step kinds and lines."""
    counts = {
        "pauses": sum(move.pauses for move in made),
        "bytes": sum(move.copies for move in made) if bytes_known else 0,
        "invalid": len(state.invalid),
        "steps": len(made),
    }
    kinds = tuple(KINDS.index(move.kind) for move in made)
    return tuple(counts[name] for name in criteria), kinds, tuple(move.shell_line for move in made), tie
